"""The running kernel's VFIO variant drivers, from its modules.alias.

A variant driver (mlx5_vfio_pci, pds_vfio_pci, virtio_vfio_pci, ...) declares the
functions it can hand to a guest with PCI_DRIVER_OVERRIDE_DEVICE_VFIO: depmod writes
those as `alias vfio_pci:v...d...sv...sd...bc...sc...i* MODULE` (scripts/mod/file2alias.c),
and such a driver binds only through driver_override, never by a probe. libvirt (>= 10.0,
virPCIDeviceFindBestVFIOVariant) reads the same lines to choose one; so does pcimgr, without
running modinfo or modprobe per function.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from pcimgr.host.machine import Machine

PREFIX = b"alias vfio_pci:"
MAX_SIZE = 64 << 20  # Debian's 6.12 modules.alias is ~1.4 MiB


class Alias(NamedTuple):
    pattern: str  # after "vfio_pci:", as depmod wrote it (`*` and `?` wildcards, [...])
    module: str


def release(machine: Machine) -> str | None:
    text = machine.read_system_file("proc/sys/kernel/osrelease")
    name = (text or b"").decode("ascii", "replace").strip()
    return name if name and "/" not in name and name not in (".", "..") else None


def vfio_aliases(machine: Machine) -> tuple[Alias, ...]:
    """The `vfio_pci:` aliases of the running kernel's modules; () when it has none (or no
    modules.alias: a kernel without variant drivers, a simulated host that declares none)."""
    name = release(machine)
    if name is None:
        return ()
    return _parsed(machine.read_system_file(f"lib/modules/{name}/modules.alias") or b"")


def vfio_lines(data: bytes) -> bytes:
    """modules.alias reduced to the lines pcimgr reads (what a snapshot keeps of it)."""
    return "".join(f"alias vfio_pci:{a.pattern} {a.module}\n" for a in _parsed(data)).encode()


@lru_cache(maxsize=4)
def _parsed(data: bytes) -> tuple[Alias, ...]:
    if len(data) > MAX_SIZE:
        return ()
    found = []
    start = data.find(PREFIX)
    while start >= 0:  # only these lines: a find in C, not a split of the whole file
        end = data.find(b"\n", start)
        fields = data[start + len(PREFIX):end if end >= 0 else len(data)].split()
        if len(fields) == 2:
            pattern, module = (f.decode("ascii", "replace") for f in fields)
            if module.replace("_", "").replace("-", "").isalnum():
                found.append(Alias(pattern, module))
        start = data.find(PREFIX, end) if end >= 0 else -1
    return tuple(found)
