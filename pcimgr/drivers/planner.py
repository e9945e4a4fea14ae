"""Host-driver control: plans for detach, rebind, bind and unbind, with the group rule and
the safety refusals; plans/runner.py runs them (journal, rollback, original-driver records)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, Refused
from pcimgr.core.model import Host, PciDevice
from pcimgr.core.viability import HARMLESS_DRIVERS, blocks_vfio
from pcimgr.drivers.binding import BindDriver, Reprobe
from pcimgr.drivers.safety import concerns
from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import Sysfs
from pcimgr.host.usage import Survey
from pcimgr.plans import records
from pcimgr.plans import transaction as plans
from pcimgr.plans.runner import Proposal

if TYPE_CHECKING:
    from pcimgr.plans.step import Step

_DRIVER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def check_driver_name(name: str) -> str:
    if not _DRIVER_NAME.fullmatch(name):
        raise BadInput(f"not a driver name: {name!r}; use a module's driver name such as "
                       "vfio-pci or pci-stub")
    return name


def module_for(machine: Machine, driver: str) -> str | None:
    """The module to load before binding, or None when the driver is there already."""
    if machine.sysfs.exists(f"bus/pci/drivers/{driver}"):
        return None
    if not machine.loads_modules:
        machine.load_module(driver)  # says why it cannot, before anything is written
    return driver


def refuse_unsafe(sysfs: Sysfs, host: Host, survey: Survey, leaving: list[PciDevice],
                   force: bool) -> None:
    """Refuse (exit 4) when the host depends on a function that would leave its driver.

    Run for every function a plan touches, with a driver or without: a chipset
    function is refused either way, and the survey finds nothing on a function
    that is on vfio-pci or pci-stub already.
    """
    found = concerns(sysfs, host, leaving, survey)
    hard = any(not c.forceable for c in found)
    if not found or (force and not hard):
        return
    by_address: dict[str, list[str]] = {}
    for c in found:
        by_address.setdefault(c.address, []).append(c.reason)
    reasons = "; ".join(f"{a}: {', '.join(r)}" for a, r in by_address.items())
    if hard:
        raise Refused(f"refusing: {reasons}; a chipset function cannot be given away, not "
                      "even with --force")
    raise Refused(f"refusing: {reasons}", forceable=True)


def plan_detach(machine: Machine, host: Host, survey: Survey, addresses: tuple[PciAddress, ...],
                driver: str, group: bool, force: bool) -> Proposal:
    check_driver_name(driver)
    targets = {d.address: d for d in (host.require(a) for a in addresses)}
    if driver == "vfio-pci" and not host.iommu_enabled:
        raise Refused("refusing: the IOMMU is off, so vfio-pci cannot take any function; add "
                      "intel_iommu=on (Intel) or amd_iommu=on (AMD) to the kernel command line "
                      "and reboot")
    for d in list(targets.values()):
        if d.is_bridge:
            raise Refused(f"refusing: {d.address} is a PCI bridge; pass the endpoints behind it")
        grp = host.groups.get(d.iommu_group) if d.iommu_group is not None else None
        mates = [m for m in (grp.members if grp else ()) if m.address not in targets
                 and blocks_vfio(m)]
        if mates and not group:
            raise Refused(
                f"refusing: {d.address} shares IOMMU group {d.iommu_group} with "
                + ", ".join(f"{m.address} (on {m.driver})" for m in mates)
                + "; VFIO can use the group only when they leave their drivers too: pass "
                "--group to detach them in the same transaction")
        targets.update((m.address, m) for m in mates)
    moving = [d for d in sorted(targets.values(), key=lambda d: d.address) if d.driver != driver]
    refuse_unsafe(machine.sysfs, host, survey, moving, force)
    notes = tuple(f"{d.address} is already on {driver}" for d in targets.values()
                  if d.driver == driver)
    steps = tuple(BindDriver(str(d.address), driver, driver, d.driver, d.driver_override)
                  for d in moving)
    return Proposal(plans.Plan(f"detach {' '.join(str(a) for a in addresses)}", steps),
                    module_for(machine, driver) if steps else None, notes)


def plan_bind(machine: Machine, host: Host, survey: Survey, addresses: tuple[PciAddress, ...],
              driver: str, force: bool) -> Proposal:
    """Each function to DRIVER, as one transaction; no group rule (bind is the tool for
    drivers other than vfio-pci, and for doing by hand what detach does for a group)."""
    check_driver_name(driver)
    found = [host.require(a) for a in addresses]
    moving = [d for d in found if d.driver != driver]
    refuse_unsafe(machine.sysfs, host, survey, moving, force)
    steps = tuple(BindDriver(str(d.address), driver, driver, d.driver, d.driver_override)
                  for d in moving)
    notes = tuple(f"{d.address} is already on {driver}" for d in found if d.driver == driver)
    command = f"bind {' '.join(str(a) for a in addresses)} {driver}"
    return Proposal(plans.Plan(command, steps), module_for(machine, driver) if steps else None,
                    notes)


def plan_unbind(machine: Machine, host: Host, survey: Survey, addresses: tuple[PciAddress, ...],
                force: bool) -> Proposal:
    found = [host.require(a) for a in addresses]
    bound = [d for d in found if d.driver is not None]
    refuse_unsafe(machine.sysfs, host, survey, bound, force)
    steps = tuple(BindDriver(str(d.address), None, d.driver_override, d.driver,
                             d.driver_override) for d in bound)
    notes = tuple(f"{d.address} has no driver" for d in found if d.driver is None)
    return Proposal(plans.Plan(f"unbind {' '.join(str(a) for a in addresses)}", steps), None,
                    notes)


def plan_rebind(machine: Machine, host: Host, addresses: tuple[PciAddress, ...],
                records: dict[str, dict]) -> Proposal:
    steps: list[Step] = []
    notes = []
    for address in addresses:
        d = host.require(address)
        a = str(address)
        record = records.get(a)
        if record is not None:
            if d.driver == record["driver"] and d.driver_override == record["override"]:
                notes.append(f"{a} is already on its original driver {d.driver}")
                continue
            steps.append(BindDriver(a, record["driver"], record["override"], d.driver,
                                    d.driver_override))
        elif d.driver is None and d.driver_override is None:
            # no record: pcimgr never moved it, and a probe would choose for the host
            notes.append(f"{a} has no driver, and pcimgr never moved it; nothing to give "
                         f"back (`pcimgr bind {a} DRIVER` gives it one)")
        elif d.driver not in HARMLESS_DRIVERS and d.driver_override is None:
            notes.append(f"{a} is on its host driver {d.driver}; nothing to give back")
        else:
            steps.append(Reprobe(a, d.driver, d.driver_override))
    return Proposal(plans.Plan(f"rebind {' '.join(str(a) for a in addresses)}", tuple(steps)),
                    None, tuple(notes))


# -- running a proposal --------------------------------------------------

def records_path(state: str, address: str) -> str:
    return records.device_path(state, address)


def load_records(state: str, addresses: tuple[PciAddress, ...]) -> dict[str, dict]:
    found = {}
    for a in addresses:
        data = records.load_driver(state, str(a))
        if data is not None:
            found[str(a)] = data
    return found
