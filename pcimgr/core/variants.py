"""Which VFIO variant driver fits a function best: libvirt's rule, so that pcimgr and
libvirt's managed='yes' pick the same one.

The function's modalias with the `vfio_pci:` prefix is matched against each variant's
alias (shell wildcards, as modprobe matches aliases); among those that match, the one with
the fewest wildcards is the most specific and wins (libvirt's
virPCIDeviceFindBestVFIOVariant, 10.0); a tie keeps the first in modules.alias order.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from pcimgr.core.model import PciDevice


def modalias(device: PciDevice) -> str:
    """As the kernel prints it (`modalias` in sysfs), after the `vfio_pci:` prefix."""
    c = device.class_code
    return (f"v{int(device.vendor_id, 16):08X}d{int(device.device_id, 16):08X}"
            f"sv{int(device.subsystem_vendor_id or '0', 16):08X}"
            f"sd{int(device.subsystem_device_id or '0', 16):08X}"
            f"bc{c >> 16:02X}sc{c >> 8 & 0xFF:02X}i{c & 0xFF:02X}")


def best(device: PciDevice, aliases: Iterable[tuple[str, str]]) -> str | None:
    """The module of the most specific variant alias matching DEVICE, or None."""
    text = modalias(device)
    chosen: tuple[int, str] | None = None
    for pattern, module in aliases:
        if fnmatchcase(text, pattern):
            wildcards = pattern.count("*") + pattern.count("?")
            if chosen is None or wildcards < chosen[0]:
                chosen = (wildcards, module)
    return chosen[1] if chosen else None
