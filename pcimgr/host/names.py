"""Attach human names from pci.ids to a Host, looking up only what is present."""

from __future__ import annotations

from dataclasses import dataclass

from pcimgr.core.model import PciDevice
from pcimgr.host.pciids import PciIds


@dataclass(frozen=True)
class Names:
    vendor: str | None
    device: str | None
    class_name: str | None


class Namer:
    def __init__(self, ids: PciIds | None = None) -> None:
        self._ids = ids if ids is not None else PciIds()
        self._cache: dict[tuple[str, str, int], Names] = {}

    def __call__(self, device: PciDevice) -> Names:
        key = (device.vendor_id, device.device_id, device.class_code)
        if key not in self._cache:
            self._cache[key] = Names(self._ids.vendor(device.vendor_id),
                                     self._ids.device(device.vendor_id, device.device_id),
                                     self._ids.class_name(device.class_code))
        return self._cache[key]
