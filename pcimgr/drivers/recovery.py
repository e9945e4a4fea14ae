"""Recovery's re-check: the undo a journal asks for held to the rules of a fresh plan.

A journal is data on disk; root carrying it out must not move a function the host needs
because the file said so. Each function an undo would move off the driver it is on now
meets what `detach` would make it meet: the chipset rule (never, not even forced) and the
host-dependency survey (forceable, as for any plan).
"""

from __future__ import annotations

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import Refused
from pcimgr.drivers.planner import check_driver_name, refuse_unsafe
from pcimgr.host import discovery, usage
from pcimgr.host.machine import Machine
from pcimgr.plans.step import Step
from pcimgr.plans.transaction import Vet


def vet(machine: Machine, force: bool = False) -> Vet:
    """What plans.transaction.recover calls on the started steps before undoing any."""

    def check(steps: tuple[Step, ...]) -> None:
        moves = [(PciAddress.parse(a), d) for step in steps for a, d in step.undo_moves()]
        for _, driver in moves:
            if driver is not None:
                check_driver_name(driver)  # it becomes a path below /sys/bus/pci/drivers
        if not moves:
            return
        host = discovery.scan_related(machine.sysfs, tuple(a for a, _ in moves))
        # a function already on the driver undo names is left alone; one that is gone
        # (a VF the undo recreates) has nothing the host could be using
        leaving = []
        for address, driver in moves:
            d = host.get(address)
            if d is not None and d.driver != driver and d not in leaving:
                leaving.append(d)
        if not leaving:
            return
        try:
            refuse_unsafe(machine.sysfs, host, usage.survey(machine), leaving, force)
        except Refused as e:
            raise Refused("would move what the host needs: "
                          + e.problem.removeprefix("refusing: "), e.forceable) from None
    return check
