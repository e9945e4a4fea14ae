"""Resetting a function between guests, and what a reset would hit (issue 16).

A function with FLR or a PM reset is reset alone. One without either can only be reset
with its bus (libvirt falls back to a secondary bus reset): every other function behind
the same bridge is reset too. Linux decides a function's reset methods when it enumerates
it, so its "bus" can be stale: the lab's first e1000 behind the PCIe-to-PCI bridge keeps
"bus" although its mate sits on that bus now. Both `assign` and `pcimgr reset` (virsh's
nodedev-reset) refuse a reset that would hit a function the host uses or another guest
holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import Refused
from pcimgr.core.model import Host
from pcimgr.core.readiness import ready
from pcimgr.core.topology import Topology
from pcimgr.drivers.planner import refuse_unsafe
from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import device_path
from pcimgr.host.usage import Survey
from pcimgr.plans import transaction as plans
from pcimgr.plans.runner import Proposal
from pcimgr.plans.step import StepBase, register

# who else holds a function: a guest's name, or None
HeldBy = Callable[[PciAddress], list[str]]


@register
@dataclass(frozen=True)
class ResetFunction(StepBase):
    """`echo 1 > reset`: the kernel resets the function by the first method that works."""

    address: str
    methods: tuple[str, ...]
    kind: str = "reset"

    def summary(self) -> str:
        return f"{self.address}: reset ({', '.join(self.methods) or 'no method'})"

    def describe(self) -> list[str]:
        return [f"echo 1 > /sys/{device_path(self.address, 'reset')}"]

    def apply(self, machine: Machine) -> None:
        machine.sysfs.write_attr(device_path(self.address, "reset"), "1")

    def undo(self, machine: Machine) -> None:
        """A reset leaves nothing to give back: the function's state was the device's own."""

    @classmethod
    def from_json(cls, data: dict) -> ResetFunction:
        return cls(data["address"], tuple(data["methods"]), data.get("kind", "reset"))


def at_risk(topo: Topology, address: PciAddress, survey: Survey, held_by: HeldBy,
            ours: Iterable[PciAddress]) -> list[str]:
    """The functions a reset of address's bus would hit that are not ours to hit, each with
    why: the host uses it, or a guest holds it."""
    mine = set(ours)
    found = []
    for a in topo.reset(address).bus_collateral:
        if a in mine:
            continue
        why = [str(u) for u in survey.of(a)] + [f"guest {g} holds it" for g in held_by(a)]
        if why:
            found.append(f"{a} ({'; '.join(why)})")
    return found


def assign_notes(topo: Topology, address: PciAddress, survey: Survey, held_by: HeldBy,
                 ours: Iterable[PciAddress], force: bool) -> list[str]:
    """assign: a warning when only a bus reset can reset the function between guests, and
    a refusal (forceable) when that reset would hit the host's or another guest's function."""
    reset = topo.reset(address)
    if reset.function_level:
        return []
    if not reset.bus_collateral:
        return [f"warning: {address} has no reset method (no FLR, no PM reset, no bus of its "
                "own): its state carries over from one guest to the next"]
    risky = at_risk(topo, address, survey, held_by, ours)
    if risky and not force:
        raise Refused(f"refusing: {address} has no function-level reset (no FLR, no PM "
                      "reset), so between guests libvirt resets its bus, which also resets "
                      + ", ".join(risky), forceable=True)
    hit = ", ".join(str(a) for a in reset.bus_collateral)
    return [f"warning: {address} has no function-level reset; resetting it between guests "
            f"resets its bus, and with it {hit}"]


def plan_reset(machine: Machine, host: Host, survey: Survey, topo: Topology,
               address: PciAddress, held_by: HeldBy, force: bool) -> Proposal:
    """virsh's nodedev-reset with pcimgr's guard: not a function a guest holds (never), not
    one the host uses or one bound to a host driver (--force), not a bus reset that hits
    anything else the host uses or a guest holds (--force)."""
    device = host.require(address)
    guests = held_by(address)
    if guests:
        raise Refused(f"refusing: {address} is held by {', '.join(guests)}; a reset under a "
                      f"running guest corrupts what it is doing (`pcimgr release {address}` "
                      "first)")
    if device.sriov is not None and device.sriov.numvfs and not force:
        raise Refused(f"refusing: {address} has {device.sriov.numvfs} VF(s), and a reset of a "
                      "PF resets its VFs with it (their guests and the host lose them)",
                      forceable=True)
    refuse_unsafe(machine.sysfs, host, survey, [device], force)
    if device.driver is not None and not ready(device) and not force:
        raise Refused(f"refusing: {address} is bound to {device.driver}, which would see its "
                      f"device reset under it; `pcimgr detach {address}` first", forceable=True)
    reset = topo.reset(address)
    if not reset.methods:
        raise Refused(f"{address} has no reset method the kernel can use (no FLR, no PM "
                      "reset, and its bus is not its own)")
    notes: list[str] = []
    if reset.methods[0] == "bus" and reset.bus_collateral:
        risky = at_risk(topo, address, survey, held_by, ())
        hit = ", ".join(str(a) for a in reset.bus_collateral)
        if risky and not force:
            raise Refused(f"refusing: the kernel would reset {address} with its bus, which "
                          "also resets " + ", ".join(risky), forceable=True)
        notes.append(f"warning: the kernel resets {address} with its bus, which also resets "
                     f"{hit}")
    step = ResetFunction(str(address), reset.methods)
    return Proposal(plans.Plan(f"reset {address}", (step,)), None, tuple(notes))
