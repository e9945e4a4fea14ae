"""`pcimgr vgpu set VF TYPE`: a vGPU type written into a VF of NVIDIA's vendor VFIO
interface (core/mdev.py), as a journaled step whose undo puts the VF's type back.

Refused before the write: a VF without the interface; a type the VF cannot take now (its
creatable list, which its siblings' types shrink); a VF that has another type (clear it
first, so no guest's vGPU changes under it); clearing or changing a VF a guest's XML names
or a process holds. After a change every sibling's list is read again: creating one may
shrink the others'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, KernelError, NotFound, Refused
from pcimgr.core.mdev import VendorVgpu, find_vgpu_type
from pcimgr.host import vgpus
from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import Sysfs, device_path
from pcimgr.plans import transaction as plans
from pcimgr.plans.runner import Proposal
from pcimgr.plans.step import StepBase, register

NONE = ("none", "0")


def _write(sysfs: Sysfs, vf: str, type_id: int) -> None:
    sysfs.write_attr(vgpus.current_path(vf), str(type_id))
    now = vgpus.read(sysfs, vf)
    if now is None or now.current != type_id:
        raise KernelError(f"{vf}: current_vgpu_type reads {now.current if now else 'nothing'} "
                          f"after writing {type_id}; see `dmesg`")


@register
@dataclass(frozen=True)
class SetVgpuType(StepBase):
    address: str  # the VF
    type_id: int  # 0: none
    name: str
    original: int
    kind: str = "vgpu-type"

    def __post_init__(self) -> None:
        # a journal's step is data: what it prints and writes is held to the reader's rules
        if self.type_id < 0 or self.original < 0 or not self.name.isprintable():
            raise BadInput(f"not a vGPU type step: {self.type_id!r} {self.name!r}")

    def summary(self) -> str:
        what = f"vGPU type {self.type_id} ({self.name})" if self.type_id else "no vGPU type"
        return f"{self.address}: {what} (was {self.original or 'none'})"

    def describe(self) -> list[str]:
        return [f"echo {self.type_id} > /sys/{vgpus.current_path(self.address)}"]

    def apply(self, machine: Machine) -> None:
        _write(machine.sysfs, self.address, self.type_id)

    def undo(self, machine: Machine) -> None:
        now = vgpus.read(machine.sysfs, self.address)
        if now is None or now.current == self.original:
            return
        if now.current:
            _write(machine.sysfs, self.address, 0)
        if self.original:
            _write(machine.sysfs, self.address, self.original)

    def undo_vfio(self) -> tuple[str, ...]:
        return (self.address,)

    def undo_describe(self) -> list[str]:
        lines = [f"echo 0 > /sys/{vgpus.current_path(self.address)}   # unless it reads "
                 f"{self.original}"]
        if self.original:
            lines.append(f"echo {self.original} > /sys/{vgpus.current_path(self.address)}")
        return lines


def require(sysfs: Sysfs, vf: PciAddress) -> VendorVgpu:
    found = vgpus.read(sysfs, str(vf))
    if found is None:
        raise NotFound(f"{vf} has no vendor vGPU interface (no nvidia/current_vgpu_type: "
                       "a VF of an NVIDIA GPU on its driver, vGPU 17 or later); `pcimgr vgpu "
                       "list` shows the VFs that have it")
    return found


def siblings(sysfs: Sysfs, vf: PciAddress) -> list[VendorVgpu]:
    """The VF and its PF's other VFs with the interface, in VF order."""
    pf = sysfs.read_link(device_path(str(vf), "physfn"))
    vfs = [str(vf)]
    if pf:
        pf = pf.rsplit("/", 1)[-1]
        links = [n for n in sysfs.list_dir(device_path(pf)) if n.startswith("virtfn")
                 and n[6:].isdigit()]
        vfs = [(sysfs.read_link(device_path(pf, n)) or "").rsplit("/", 1)[-1]
               for n in sorted(links, key=lambda n: int(n[6:]))]
    found = [vgpus.read(sysfs, a) for a in vfs]
    return [v for v in found if v is not None]


def plan_set(machine: Machine, vf: PciAddress, wanted: str, assigned: Sequence[str],
             holders: Sequence[str]) -> Proposal:
    now = require(machine.sysfs, vf)
    command = f"vgpu set {vf} {wanted}"
    clearing = wanted.lower() in NONE
    if not now.current:
        if clearing:
            return Proposal(plans.Plan(command, ()), None, (f"{vf} has no vGPU type already",))
        kind = find_vgpu_type(now.creatable, wanted)
        if kind is None:
            offered = ", ".join(f"{t.id} ({t.name})" for t in now.creatable) or "none"
            raise BadInput(f"{vf} cannot take vGPU type {wanted!r} now; it can take: "
                           f"{offered} (its siblings' types shrink the list: `pcimgr vgpu "
                           "list`)")
        return Proposal(plans.Plan(command, (SetVgpuType(str(vf), kind.id, kind.name, 0),)),
                        None, ())
    # a VF that has a type lists nothing more: its siblings' catalogs may still name it
    known = [t for v in siblings(machine.sysfs, vf) for t in v.creatable]
    same = find_vgpu_type(tuple(known), wanted)
    if wanted == str(now.current) or (same is not None and same.id == now.current):
        return Proposal(plans.Plan(command, ()), None,
                        (f"{vf} has vGPU type {now.current} already",))
    users = [*(f"{d} (its XML)" for d in assigned), *holders]
    if users:
        raise Refused(f"refusing: {vf} carries vGPU type {now.current} for "
                      f"{', '.join(users)}; `pcimgr release {vf}` (and stop what holds it) "
                      "first")
    if not clearing:
        raise Refused(f"refusing: {vf} has vGPU type {now.current}; clear it first (`pcimgr "
                      f"vgpu set {vf} none`), so that no vGPU changes under a guest")
    return Proposal(plans.Plan(command, (SetVgpuType(str(vf), 0, "", now.current),)), None,
                    ())
