"""Human names for PCI ids and classes from the system's pci.ids.

The file is 1.3 MB; parsing all of it costs more than the scan it decorates.
Names are looked up only for the ids actually present: each vendor's line is one
search of the vendor list (memchr-fast; indexing every vendor first cost ~3 ms of each
`list`), each device one search inside its vendor's block and each class one inside the
class list at the end.
"""

from __future__ import annotations

import mmap
import os
import re

SEARCH_PATHS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids",
                "/usr/share/pci.ids", "/usr/share/misc/pci.ids.gz")

# A vendor line: four hex digits and two spaces at the start of a line.
_VENDOR = re.compile(rb"\n([0-9a-fA-F]{4})  ")


def find_database() -> str | None:
    override = os.environ.get("PCIMGR_PCI_IDS")
    if override is not None:
        return override if os.path.isfile(override) else None
    return next((p for p in SEARCH_PATHS if os.path.isfile(p)), None)


class PciIds:
    def __init__(self, path: str | None = None) -> None:
        self.path = path if path is not None else find_database()
        # Bytes, not text: decoding 1.3 MB costs 20 ms; only found names are decoded. The
        # plain file is mapped, not read (copying it was ~1.5 ms of every `list`): it begins
        # with comments, so every vendor line follows a newline.
        self._text: bytes | mmap.mmap = b"\n"
        if self.path and self.path.endswith(".gz"):
            import gzip
            with gzip.open(self.path, "rb") as f:
                self._text = b"\n" + f.read() + b"\n"
        elif self.path:
            with open(self.path, "rb") as f:
                try:
                    self._text = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                except ValueError:  # an empty file cannot be mapped
                    pass
        # The class list follows the vendors ("C 00" first); where it starts bounds both.
        classes = self._text.rfind(b"\nC 00  ")
        self._classes = classes if classes >= 0 else self._find(b"\nC ", 0)
        self._vendors: dict[str, tuple[str | None, int, int]] = {}
        self._class_names: dict[int, str | None] = {}

    def vendor(self, vendor_id: str) -> str | None:
        return self._vendor_block(vendor_id)[0]

    def device(self, vendor_id: str, device_id: str) -> str | None:
        name, start, end = self._vendor_block(vendor_id)
        if name is None:
            return None
        return self._line_name(f"\n\t{device_id.lower()}  ".encode(), start, end)

    def class_name(self, class_code: int) -> str | None:
        """The most specific name among subclass and base class."""
        if class_code not in self._class_names:
            self._class_names[class_code] = self._class_name(class_code)
        return self._class_names[class_code]

    def _class_name(self, class_code: int) -> str | None:
        base, sub = f"{class_code >> 16:02x}", f"{class_code >> 8 & 0xFF:02x}"
        prefix = f"\nC {base}  ".encode()
        start = self._text.find(prefix, self._classes)
        if start < 0:
            return None
        end = self._find(b"\nC ", start + 1)
        return (self._line_name(f"\n\t{sub}  ".encode(), start, end)
                or self._line_name(prefix, start, end))

    def _vendor_block(self, vendor_id: str) -> tuple[str | None, int, int]:
        """The vendor's name and where its block (its line and its devices) lies: its line
        found directly (a device line starts with a tab, so none can match), its end at the
        next vendor line."""
        key = vendor_id.lower()
        found = self._vendors.get(key)
        if found is None:
            line = f"\n{key}  ".encode()
            start = self._text.find(line, 0, self._classes + 1)
            if start < 0:
                found = (None, 0, 0)
            else:
                after = _VENDOR.search(self._text, start + 1, self._classes + 1)
                end = after.start() if after else self._classes
                found = (self._line_name(line, start, end), start, end)
            self._vendors[key] = found
        return found

    def _find(self, what: bytes, start: int) -> int:
        i = self._text.find(what, start)
        return len(self._text) - 1 if i < 0 else i

    def _line_name(self, prefix: bytes, start: int, end: int) -> str | None:
        """The name on the line that starts with prefix, between start and end."""
        text = self._text
        i = text.find(prefix, start, end + 1)
        if i < 0:
            return None
        i += len(prefix)
        end = text.find(b"\n", i)
        return text[i:end if end >= 0 else len(text)].decode("utf-8", "replace").strip()
