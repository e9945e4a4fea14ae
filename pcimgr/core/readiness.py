"""How a guest can take a function: one fact per function that every rule uses.

Ready means a guest can have it now, with no rebinding:
- `vfio-pci`;
- a VFIO variant driver (mlx5_vfio_pci, pds_vfio_pci, virtio_vfio_pci, ...: built on
  vfio-pci-core, so bound only through driver_override; each named *_vfio_pci);
- a vendor driver that registers the function with VFIO itself (NVIDIA's vGPU VFs stay on
  `nvidia`): since Linux 6.1 every device VFIO holds has `vfio-dev/vfioN` in sysfs, whoever
  its driver is, and that is how such a provider shows.
Not ready: what `detach` would bind (what_detach_binds).
"""

from __future__ import annotations

from typing import NamedTuple

from pcimgr.core.model import PciDevice

VFIO_PCI = "vfio-pci"
STUB = "pci-stub"


class Readiness(NamedTuple):
    kind: str            # "vfio-pci", "variant", "vendor", or "" when not ready
    driver: str | None   # ready: the driver a guest takes it through


NOT_READY = Readiness("", None)


def _variant_name(driver: str) -> bool:
    return driver.replace("-", "_").endswith("_vfio_pci")


def vfio_name(driver: str | None) -> bool:
    """Is DRIVER, by its name, one through which a guest takes a function (a definition's
    or a record's driver: no function to look at)? vfio-pci or a variant."""
    return driver is not None and (driver == VFIO_PCI or _variant_name(driver))


def readiness(device: PciDevice) -> Readiness:
    d = device.driver
    if d is None:
        return NOT_READY
    if d == VFIO_PCI:
        return Readiness("vfio-pci", d)
    if _variant_name(d):
        return Readiness("variant", d)
    if device.vfio_dev is not None:
        return Readiness("vendor", d)
    return NOT_READY


def ready(device: PciDevice) -> bool:
    return readiness(device).kind != ""


def what_detach_binds(device: PciDevice, best_variant: str | None) -> str:
    """The most specific variant the running kernel's modules.alias offers for the
    function (core/variants.py, libvirt's choice too), else plain vfio-pci."""
    return best_variant or VFIO_PCI


def same_driver(a: str | None, b: str | None) -> bool:
    """Module names spell `-` as `_` (modprobe treats them alike; vfio-pci's module is
    vfio_pci)."""
    return a is not None and b is not None and a.replace("-", "_") == b.replace("-", "_")
