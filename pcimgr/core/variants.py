"""Which VFIO variant driver fits a function best: libvirt's rule, so that pcimgr and
libvirt's managed='yes' pick the same one (virPCIDeviceFindBestVFIOVariant, libvirt 10.0).

A modalias (`v...d...sv...sd...bc...sc...i...`, after the `vfio_pci:` prefix) has seven
fields. An alias matches a function when each of its fields is exactly `*` or exactly the
function's field (case-sensitive: the kernel prints upper-case hex; a partial glob such as
`0a*` is no wildcard to libvirt, so none to pcimgr); the match with the fewest `*` fields
wins, and a tie keeps the first in modules.alias order.
"""

from __future__ import annotations

from collections.abc import Iterable

from pcimgr.core.model import PciDevice

FIELDS = ("v", "d", "sv", "sd", "bc", "sc", "i")


def modalias(device: PciDevice) -> str:
    """As the kernel prints it (`modalias` in sysfs), after the `vfio_pci:` prefix."""
    c = device.class_code
    return (f"v{int(device.vendor_id, 16):08X}d{int(device.device_id, 16):08X}"
            f"sv{int(device.subsystem_vendor_id or '0', 16):08X}"
            f"sd{int(device.subsystem_device_id or '0', 16):08X}"
            f"bc{c >> 16:02X}sc{c >> 8 & 0xFF:02X}i{c & 0xFF:02X}")


def fields(text: str) -> tuple[str, ...] | None:
    """The seven fields: each the text between its prefix and the next one's (the first
    occurrence after it, as libvirt's strstr finds it); None when a prefix is missing."""
    found, at = [], 0
    for i, name in enumerate(FIELDS):
        if not text.startswith(name, at):
            return None
        at += len(name)
        end = len(text) if i == len(FIELDS) - 1 else text.find(FIELDS[i + 1], at)
        if end < 0:
            return None
        found.append(text[at:end])
        at = end
    return tuple(found)


def best(device: PciDevice, aliases: Iterable[tuple[str, str]]) -> str | None:
    """The module of the most specific variant alias matching DEVICE, or None."""
    own = fields(modalias(device))
    assert own is not None
    chosen: tuple[int, str] | None = None
    for pattern, module in aliases:
        theirs = fields(pattern)
        if theirs is None:
            continue
        wildcards = sum(1 for f in theirs if f == "*")
        if all(f == "*" or f == o for f, o in zip(theirs, own, strict=True)) and (
                chosen is None or wildcards < chosen[0]):
            chosen = (wildcards, module)
    return chosen[1] if chosen else None
