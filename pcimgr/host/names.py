"""Attach human names to a Host's functions, looking up only what is present.

On a host with udev, each function's names come from its udev database record
(host/udevdb.py: one small read per function); pci.ids is read only for what a
record lacks, and where there is no database at all (a simulated host).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pcimgr.core.model import PciDevice
from pcimgr.host import udevdb

if TYPE_CHECKING:
    from pcimgr.core.address import PciAddress
    from pcimgr.host.pciids import PciIds


@dataclass(frozen=True)
class Names:
    vendor: str | None
    device: str | None
    class_name: str | None


class Namer:
    def __init__(self, ids: PciIds | None = None,
                 udev: udevdb.UdevDatabase | None = None) -> None:
        self._ids = ids  # read on first need: not at all when udev names every function
        self._udev = udev
        self._cache: dict[tuple[str, str, int], Names] = {}
        self._by_address: dict[PciAddress, Names] = {}

    @property
    def ids(self) -> PciIds:
        if self._ids is None:
            from pcimgr.host.pciids import PciIds
            self._ids = PciIds()
        return self._ids

    def __call__(self, device: PciDevice) -> Names:
        udev = self._udev
        if udev is not None:
            names = self._by_address.get(device.address)
            if names is None:
                names = self._by_address[device.address] = self._from_udev(udev, device)
            return names
        return self._from_ids(device)

    def _from_ids(self, device: PciDevice) -> Names:
        key = (device.vendor_id, device.device_id, device.class_code)
        names = self._cache.get(key)
        if names is None:
            ids = self.ids
            names = self._cache[key] = Names(ids.vendor(device.vendor_id),
                                             ids.device(device.vendor_id, device.device_id),
                                             ids.class_name(device.class_code))
        return names

    def _from_udev(self, udev: udevdb.UdevDatabase, device: PciDevice) -> Names:
        found = udev.names(str(device.address))
        if not found:
            return self._from_ids(device)
        vendor, model = found.get(udevdb.VENDOR), found.get(udevdb.MODEL)
        klass = found.get(udevdb.SUBCLASS) or found.get(udevdb.CLASS)
        if vendor is None or model is None or klass is None:
            fallback = self._from_ids(device)
            vendor = vendor or fallback.vendor
            model = model or fallback.device
            klass = klass or fallback.class_name
        return Names(vendor, model, klass)
