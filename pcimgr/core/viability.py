"""The kernel's rule for whether VFIO can use an IOMMU group.

VFIO opens a group only when every endpoint in it is bound to a VFIO driver,
to pci-stub, or to nothing (drivers/vfio/group.c, vfio_dev_driver_allowed);
functions with a bridge header never block.
"""

from __future__ import annotations

from dataclasses import dataclass

from pcimgr.core.model import IommuGroup, PciDevice

VFIO_DRIVERS = frozenset({"vfio-pci"})
HARMLESS_DRIVERS = VFIO_DRIVERS | {"pci-stub"}


@dataclass(frozen=True)
class Viability:
    viable: bool
    blockers: tuple[PciDevice, ...]  # endpoints still on a host driver


def blocks_vfio(device: PciDevice) -> bool:
    return not device.is_bridge and device.driver is not None \
        and device.driver not in HARMLESS_DRIVERS


def viability(group: IommuGroup) -> Viability:
    blockers = tuple(d for d in group.members if blocks_vfio(d))
    return Viability(not blockers, blockers)
