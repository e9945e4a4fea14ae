"""Names from the udev database: what udev's hardware database said of each PCI function.

systemd-udevd looks every function up in its hwdb (built from pci.ids) when the
function appears and records the result in /run/udev/data/+pci:<address> as
`E:ID_VENDOR_FROM_DATABASE=...` lines. Reading that file is one small read per
function, where pci.ids is a 1.3 MB file to search. Absent (a container, a
host without udev, a simulated host that did not lay one out): None, and the
caller falls back to pci.ids.
"""

from __future__ import annotations

import os

DATA_DIR = "run/udev/data"  # below the system root

VENDOR = "ID_VENDOR_FROM_DATABASE"
MODEL = "ID_MODEL_FROM_DATABASE"  # with the subsystem's name in parentheses when hwdb has it
CLASS = "ID_PCI_CLASS_FROM_DATABASE"
SUBCLASS = "ID_PCI_SUBCLASS_FROM_DATABASE"
_WANTED = (VENDOR, MODEL, CLASS, SUBCLASS)


class UdevDatabase:
    """The data directory held open; each function's file read relative to it."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def open(cls, system_root: str) -> UdevDatabase | None:
        try:
            fd = os.open(os.path.join(system_root, DATA_DIR),
                         os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
        return cls(fd)

    def close(self) -> None:
        os.close(self._fd)

    def names(self, address: str) -> dict[str, str] | None:
        """The *_FROM_DATABASE properties udev recorded for the function, None without a
        record (also when it cannot be read)."""
        try:
            fd = os.open(f"+pci:{address}", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._fd)
        except OSError:
            return None
        try:
            data = os.read(fd, 65536)
        except OSError:
            return None
        finally:
            os.close(fd)
        found = {}
        for line in data.decode("utf-8", "replace").split("\n"):
            if line.startswith("E:ID_"):
                key, _, value = line[2:].partition("=")
                if key in _WANTED and value:
                    found[key] = value
        return found
