"""Hand-offs whose guest is gone without libvirt's release (libvirtd or the host crashed,
the hook was killed): `pcimgr recover` gives their devices back, and the boot unit says
so. A guest runs while a process holds one of its groups' /dev/vfio nodes or its QEMU
(libvirt's pid file for it) lives; asked of the kernel, never of libvirt."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import NamedTuple

from pcimgr.core.errors import PcimgrError
from pcimgr.core.handoff import VM_NAME
from pcimgr.handoff import planner
from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import device_path
from pcimgr.plans import statefile

GRACE = 120.0  # a hand-off this young may be a guest still starting (QEMU not up yet)


class Orphan(NamedTuple):
    found: planner.Held
    why: str


def held_names(state: str) -> list[str]:
    return [n[:-5] for n in statefile.names(state, "handoffs")
            if n.endswith(".json") and VM_NAME.fullmatch(n[:-5])]


def running(machine: Machine, found: planner.Held) -> bool:
    holders = machine.vfio_holders()
    for step in found.steps:
        for address, _ in step.undo_moves():
            link = machine.sysfs.read_link(device_path(address, "iommu_group"))
            group = link.rsplit("/", 1)[-1] if link else ""
            if group.isdigit() and int(group) in holders:
                return True
    pid = (machine.read_system_file(f"run/libvirt/qemu/{found.vm}.pid") or b"").strip()
    if not re.fullmatch(rb"\d{1,10}", pid):
        return False
    cmdline = machine.read_system_file(f"proc/{pid.decode()}/cmdline") or b""
    # QEMU's -name guest=NAME,debug-threads=on (a NUL ends it when alone)
    return any(arg.startswith(f"guest={found.vm},".encode()) or arg == f"guest={found.vm}".encode()
               for arg in cmdline.split(b"\0"))


def orphans(machine: Machine, state: str, now: float) -> Iterator[Orphan | str]:
    """Each hand-off to give back, or a line saying why one could not be read (one damaged
    record must not keep the others, or the boot's apply, from running)."""
    for vm in held_names(state):
        try:
            found = planner.held(machine, state, vm)
        except PcimgrError as e:
            yield f"{vm}'s hand-off record was not read: {e}"
            continue
        if found is None:
            continue
        if found.stale:
            yield Orphan(found, "recorded in an earlier boot")
        elif not running(machine, found) and now - _written(state, vm) > GRACE:
            yield Orphan(found, "its guest is not running")


def _written(state: str, vm: str) -> float:
    """When the record was committed (the end of prepare, not its start, which may have
    waited on a display manager and hugepages)."""
    try:
        return os.stat(os.path.join(state, planner.record_rel(vm))).st_mtime
    except OSError:
        return 0.0
