"""Human names for PCI ids and classes from the system's pci.ids.

The file is 1.3 MB; parsing all of it costs more than the scan it decorates.
Names are looked up only for the ids actually present, by searching the text.
"""

from __future__ import annotations

import os
import re

SEARCH_PATHS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids",
                "/usr/share/pci.ids", "/usr/share/misc/pci.ids.gz")

# A line that starts a new top-level block (vendor or class).
_TOP = re.compile(rb"\n(?=[0-9a-fA-FC])")


def find_database() -> str | None:
    override = os.environ.get("PCIMGR_PCI_IDS")
    if override is not None:
        return override if os.path.isfile(override) else None
    return next((p for p in SEARCH_PATHS if os.path.isfile(p)), None)


class PciIds:
    def __init__(self, path: str | None = None) -> None:
        self.path = path if path is not None else find_database()
        # Bytes, not text: decoding 1.3 MB costs 20 ms; only found names are decoded.
        self._text = b""
        if self.path:
            if self.path.endswith(".gz"):
                import gzip
                with gzip.open(self.path, "rb") as f:
                    self._text = b"\n" + f.read()
            else:
                with open(self.path, "rb") as f:
                    self._text = b"\n" + f.read()
        self._vendors: dict[str, tuple[str | None, bytes]] = {}

    def vendor(self, vendor_id: str) -> str | None:
        return self._vendor_block(vendor_id)[0]

    def device(self, vendor_id: str, device_id: str) -> str | None:
        name, block = self._vendor_block(vendor_id)
        if name is None:
            return None
        return _line_name(block, f"\n\t{device_id.lower()}  ".encode())

    def class_name(self, class_code: int) -> str | None:
        """The most specific name among subclass and base class."""
        base, sub = f"{class_code >> 16:02x}", f"{class_code >> 8 & 0xFF:02x}"
        start = self._text.find(f"\nC {base}  ".encode())
        if start < 0:
            return None
        block = self._block(start)
        return (_line_name(block, f"\n\t{sub}  ".encode())
                or _line_name(block, f"\nC {base}  ".encode()))

    def _vendor_block(self, vendor_id: str) -> tuple[str | None, bytes]:
        key = vendor_id.lower()
        if key not in self._vendors:
            prefix = f"\n{key}  ".encode()
            start = self._text.find(prefix)
            if start < 0:
                self._vendors[key] = (None, b"")
            else:
                block = self._block(start)
                self._vendors[key] = (_line_name(block, prefix), block)
        return self._vendors[key]

    def _block(self, start: int) -> bytes:
        m = _TOP.search(self._text, start + 1)
        return self._text[start:m.start() if m else len(self._text)] + b"\n"


def _line_name(block: bytes, prefix: bytes) -> str | None:
    i = block.find(prefix)
    if i < 0:
        return None
    i += len(prefix)
    return block[i:block.index(b"\n", i)].decode("utf-8", "replace").strip()
