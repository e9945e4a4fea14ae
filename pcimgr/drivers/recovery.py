"""Recovery's re-check: the undo a journal asks for held to the rules of a fresh plan.

A journal is data on disk; root carrying it out must not move a function the host needs
because the file said so. What an undo takes from the host meets what `detach` or `vfs
destroy` would make it meet: the chipset rule (never, not even forced) and the
host-dependency survey (forceable, as for any plan). Taken: a function moved off the
driver it is on now, the VFs a PF has now when undo rewrites its VF count, and a function
whose interface undo takes down; an interface undo acts on must be its function's own. An
mdev or a VF's vGPU type undo would end is not taken from a process holding its group.
"""

from __future__ import annotations

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import Refused
from pcimgr.core.readiness import ready
from pcimgr.drivers.planner import check_driver_name, refuse_unsafe
from pcimgr.drivers.safety import boot_display
from pcimgr.host import discovery, usage
from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import device_path
from pcimgr.plans.step import Step
from pcimgr.plans.transaction import Vet


def vet(machine: Machine, force: bool = False) -> Vet:
    """What plans.transaction.recover calls on the started steps before undoing any."""

    def check(steps: tuple[Step, ...]) -> None:
        _refuse_held(machine, [t for step in steps for t in step.undo_vfio()])
        moves = [(PciAddress.parse(a), d) for step in steps for a, d in step.undo_moves()]
        resized = [PciAddress.parse(a) for step in steps for a in step.undo_removes()]
        links = [(PciAddress.parse(a), n, down) for step in steps
                 for a, n, down in step.undo_netdevs()]
        for _, driver in moves:
            if driver is not None:
                check_driver_name(driver)  # it becomes a path below /sys/bus/pci/drivers
        named = tuple(a for a, _ in moves) + tuple(resized) + tuple(a for a, _, _ in links)
        if not named:
            return
        host = discovery.scan_related(machine.sysfs, named)
        # a function already on the driver undo names is left alone; one that is gone
        # (a VF the undo recreates) has nothing the host could be using
        leaving = [d for a, driver in moves if (d := host.get(a)) is not None
                   and d.driver != driver]
        for pf in (host.get(a) for a in resized):
            if pf is not None and pf.sriov is not None:
                leaving += [vf for vf in map(host.get, pf.sriov.vfs) if vf is not None]
        for a, netdev, down in links:
            d = host.get(a)
            if d is None or netdev not in d.netdevs:
                raise Refused(f"would act on interface {netdev!r}, which is not "
                              f"{a}'s ({', '.join(d.netdevs) if d and d.netdevs else 'none'})")
            if down:
                leaving.append(d)
        # a boot display on no driver or a VFIO one shows the host nothing: undo giving it
        # back its driver takes nothing from the host (a run killed between unbind and probe)
        leaving = [d for d in dict.fromkeys(leaving)
                   if not (boot_display(machine.sysfs, d) and (d.driver is None or ready(d)))]
        if not leaving:
            return
        try:
            refuse_unsafe(machine.sysfs, host, usage.survey(machine), leaving, force)
        except Refused as e:
            raise Refused("would move what the host needs: "
                          + e.problem.removeprefix("refusing: "), e.forceable) from None
    return check


def _refuse_held(machine: Machine, targets: list[str]) -> None:
    """An undo that would take an mdev or a VF's vGPU type from a process using it: never
    (the kernel's remove would block until the process lets go)."""
    if not targets:
        return
    from pcimgr.core.mdev import is_uuid
    from pcimgr.host import mdevs
    holders = machine.vfio_holders()
    for target in targets:
        link = (machine.sysfs.read_link(mdevs.mdev_path(target, "iommu_group")) if is_uuid(target)
                else machine.sysfs.read_link(device_path(target, "iommu_group")))
        group = link.rsplit("/", 1)[-1] if link else ""
        if group.isascii() and group.isdigit() and int(group) in holders:
            raise Refused(f"would take {target} from {', '.join(holders[int(group)])}, which "
                          f"has its group /dev/vfio/{group} open; stop it first")
