"""Hand-offs whose guest is gone without libvirt's release (libvirtd or the host crashed,
the hook was killed): `pcimgr recover` gives their devices back, and the boot unit says
so. A guest runs while a process holds one of its groups' /dev/vfio nodes or its QEMU
(libvirt's pid file for it) lives; asked of the kernel, never of libvirt."""

from __future__ import annotations

import re
from typing import NamedTuple

from pcimgr.handoff import planner
from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import device_path
from pcimgr.plans import statefile

GRACE = 120.0  # a hand-off this young may be a guest still starting (QEMU not up yet)


class Orphan(NamedTuple):
    found: planner.Held
    why: str


def held_names(state: str) -> list[str]:
    return [n[:-5] for n in statefile.names(state, "handoffs") if n.endswith(".json")]


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
    return f"guest={found.vm}".encode() in cmdline


def orphans(machine: Machine, state: str, now: float) -> list[Orphan]:
    out = []
    for vm in held_names(state):
        found = planner.held(machine, state, vm)
        if found is None:
            continue
        if found.stale:
            out.append(Orphan(found, "recorded in an earlier boot"))
        elif not running(machine, found) and now - found.taken > GRACE:
            out.append(Orphan(found, "its guest is not running"))
    return out
