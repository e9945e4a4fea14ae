"""Frozen snapshots of what discovery found. Pure data; no I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import NotFound

# Classes whose functions have a bridge header (type 1 or 2). VFIO ignores
# them when judging whether a group is viable.
BRIDGE_CLASSES = (0x0604, 0x0607, 0x0609)


# NamedTuples, not frozen dataclasses: the same immutable values, made without generating
# code at import (each dataclass costs ~0.5 ms of every command's start)
class SriovInfo(NamedTuple):
    """SR-IOV state of a physical function."""

    totalvfs: int
    numvfs: int
    drivers_autoprobe: bool | None
    vf_device_id: str | None
    offset: int | None
    stride: int | None
    vfs: tuple[PciAddress, ...]


class PciDevice(NamedTuple):
    address: PciAddress
    vendor_id: str
    device_id: str
    subsystem_vendor_id: str | None
    subsystem_device_id: str | None
    class_code: int  # 24 bits: base class, subclass, programming interface
    revision: str | None
    driver: str | None
    driver_override: str | None
    iommu_group: int | None
    numa_node: int | None
    netdevs: tuple[str, ...]
    sriov: SriovInfo | None
    physfn: PciAddress | None
    vfio_dev: str | None = None  # vfio-dev/vfioN while VFIO holds it (Linux >= 6.1)

    @property
    def base_class(self) -> int:
        return self.class_code >> 16

    @property
    def is_bridge(self) -> bool:
        return self.class_code >> 8 in BRIDGE_CLASSES

    @property
    def ids(self) -> str:
        return f"{self.vendor_id}:{self.device_id}"


class IommuGroup(NamedTuple):
    number: int
    members: tuple[PciDevice, ...]


@dataclass(frozen=True)
class Host:
    """One consistent reading of the PCI bus."""

    devices: tuple[PciDevice, ...]
    iommu_enabled: bool
    # listed in bus/pci/devices but not readable (no uevent, ids or header): named, not
    # dropped in silence
    unreadable: tuple[str, ...] = ()
    _by_address: dict[PciAddress, PciDevice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_address", {d.address: d for d in self.devices})

    def get(self, address: PciAddress) -> PciDevice | None:
        return self._by_address.get(address)

    def require(self, address: PciAddress) -> PciDevice:
        device = self.get(address)
        if device is None:
            raise no_function(address)
        return device

    @cached_property
    def groups(self) -> dict[int, IommuGroup]:
        members: dict[int, list[PciDevice]] = {}
        for d in self.devices:
            if d.iommu_group is not None:
                members.setdefault(d.iommu_group, []).append(d)
        return {n: IommuGroup(n, tuple(ms)) for n, ms in sorted(members.items())}


def no_function(address: PciAddress) -> NotFound:
    return NotFound(f"no PCI function {address} on this host; `pcimgr list --all` shows the "
                    "functions there are")
