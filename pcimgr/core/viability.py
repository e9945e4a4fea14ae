"""The kernel's rule for whether VFIO can use an IOMMU group.

VFIO opens a group only when every endpoint in it is bound to a VFIO driver (vfio-pci, a
variant, a vendor's VFIO provider: core/readiness.py), to pci-stub, or to nothing
(drivers/vfio/group.c, vfio_dev_driver_allowed); functions with a bridge header never
block.
"""

from __future__ import annotations

from dataclasses import dataclass

from pcimgr.core.model import IommuGroup, PciDevice
from pcimgr.core.readiness import STUB, ready, vfio_name


@dataclass(frozen=True)
class Viability:
    viable: bool
    blockers: tuple[PciDevice, ...]  # endpoints still on a host driver


def harmless(device: PciDevice) -> bool:
    """On a driver that lets VFIO have the group: a VFIO one, or pci-stub."""
    return device.driver == STUB or ready(device)


def harmless_name(driver: str | None) -> bool:
    """harmless, by the driver's name alone (a definition's or a record's)."""
    return driver == STUB or vfio_name(driver)


def blocks_vfio(device: PciDevice) -> bool:
    return not device.is_bridge and device.driver is not None and not harmless(device)


def viability(group: IommuGroup) -> Viability:
    blockers = tuple(d for d in group.members if blocks_vfio(d))
    return Viability(not blockers, blockers)
