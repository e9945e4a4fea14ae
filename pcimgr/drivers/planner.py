"""Host-driver control: plans for detach, rebind, bind and unbind, with the group rule and
the safety refusals; plans/runner.py runs them (journal, rollback, original-driver records)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pcimgr.core import variants
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, Refused
from pcimgr.core.model import Host, PciDevice
from pcimgr.core.readiness import (
    VFIO_PCI,
    readiness,
    ready,
    same_driver,
    vfio_name,
    what_detach_binds,
)
from pcimgr.core.viability import blocks_vfio, harmless
from pcimgr.drivers.binding import BindDriver, Reprobe
from pcimgr.drivers.safety import chipset, concerns
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


def require_driver(machine: Machine, driver: str) -> None:
    """The one refusal of a driver the host cannot have, for every command (exit 2)."""
    if not (machine.sysfs.exists(f"bus/pci/drivers/{driver}")
            or machine.module_available(driver)):
        raise BadInput(f"no driver {driver} on this host (not loaded, not built in, no "
                       f"module); check the name (`ls /sys/bus/pci/drivers`, `modinfo "
                       f"{driver}`)")


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


def targets_of(machine: Machine, devices: list[PciDevice], driver: str | None) -> dict[
        PciAddress, str]:
    """What detach binds each function to: DRIVER when given; else the most specific VFIO
    variant the running kernel offers for it (modules.alias, libvirt's choice too), else
    vfio-pci."""
    if driver is not None:
        return {d.address: driver for d in devices}
    from pcimgr.host import modaliases
    aliases = modaliases.vfio_aliases(machine)
    loaded = machine.sysfs.list_dir("bus/pci/drivers")
    return {d.address: what_detach_binds(d, driver_of_module(variants.best(d, aliases), loaded))
            for d in devices}


def driver_of_module(module: str | None, loaded: list[str]) -> str | None:
    """The driver a module registers (its directory under bus/pci/drivers): module names
    spell `-` as `_` (vfio-pci's module is vfio_pci). Not loaded yet: the module's name,
    which variants use for their driver too (KBUILD_MODNAME)."""
    if module is None:
        return None
    found = next((d for d in loaded if same_driver(d, module)), None)
    if found is not None:
        return found
    return VFIO_PCI if same_driver(module, VFIO_PCI) else module


def plan_detach(machine: Machine, host: Host, survey: Survey, addresses: tuple[PciAddress, ...],
                driver: str | None, group: bool, force: bool,
                owner: str | None = None, driver_hint: bool = True) -> Proposal:
    """driver None: each function to its best VFIO driver (targets_of); one already ready
    for a guest (vfio-pci, a variant, a vendor's VFIO provider) is left where it is.
    owner: USER[:GROUP] then gets the named functions' VFIO device nodes (drivers/owner.py);
    driver_hint: whether the caller has a --driver to name (detach does, assign not)."""
    if driver is not None:
        check_driver_name(driver)
    targets = {d.address: d for d in (host.require(a) for a in addresses)}
    _refuse_never(machine, host, survey, list(targets.values()))
    if (driver is None or vfio_name(driver)) and not host.iommu_enabled:
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
    ordered = sorted(targets.values(), key=lambda d: d.address)
    chosen = targets_of(machine, ordered, driver)
    stays = [d for d in ordered if (d.driver == chosen[d.address] if driver is not None
                                    else ready(d))]
    moving = [d for d in ordered if d not in stays]
    refuse_unsafe(machine.sysfs, host, survey, moving, force)
    if driver is not None and moving:  # after the host's refusals, which say more
        require_driver(machine, driver)
    notes = tuple(f"{d.address} is already on {d.driver}" if d.driver == chosen[d.address]
                  else f"{d.address} is ready for a guest already: on {d.driver} "
                       f"({readiness(d).kind} VFIO driver)"
                       + ("; `--driver` moves it anyway" if driver_hint else "")
                  for d in stays)
    steps: tuple[Step, ...] = tuple(BindDriver(str(d.address), chosen[d.address],
                                               chosen[d.address], d.driver, d.driver_override)
                                    for d in moving)
    if owner is not None:
        named = [targets[a] for a in addresses]
        steps += owning(owner, [str(d.address) for d in named],
                        [d.driver or "" if d in stays and ready(d) else chosen[d.address]
                         for d in named], [d in stays and ready(d) for d in named])
    modules = [m for m in dict.fromkeys(module_for(machine, chosen[d.address]) for d in moving)
               if m]
    return Proposal(plans.Plan(f"detach {' '.join(str(a) for a in addresses)}", steps),
                    modules[0] if modules else None, notes, also_load=tuple(modules[1:]))


def owning(owner: str, addresses: list[str], ends: list[str],
           ready_now: list[bool]) -> tuple[Step, ...]:
    """The OwnNodes steps for functions that end on a VFIO driver, or are ready through a
    vendor's one (there are no VFIO nodes otherwise: --owner with pci-stub is refused)."""
    from pcimgr.drivers import owner as owners
    wrong = sorted({e for e, r in zip(ends, ready_now, strict=True) if not (r or vfio_name(e))})
    if wrong:
        raise BadInput("--owner gives a function's VFIO device nodes to a user: it goes with "
                       "a VFIO driver (vfio-pci or a variant), not with " + ", ".join(wrong))
    uid, gid = owners.resolve(owner)
    return tuple(owners.OwnNodes(a, owner, uid, gid) for a in addresses)


def _refuse_never(machine: Machine, host: Host, survey: Survey,
                  targets: list[PciDevice]) -> None:
    """What no option overrides comes first: a chipset function named, or in the group of
    one named (the group can never go to a guest, so `--group` is no way out)."""
    refuse_unsafe(machine.sysfs, host, survey, targets, True)  # only the unforceable
    for d in targets:
        grp = host.groups.get(d.iommu_group) if d.iommu_group is not None else None
        for m in grp.members if grp else ():
            part = chipset(m)
            if part and m.address != d.address:
                raise Refused(f"refusing: {d.address} shares IOMMU group {d.iommu_group} "
                              f"with {m.address}, the chipset's {part}, which the host "
                              "needs: this group can never go to a guest, not even with "
                              "--group or --force")


def plan_bind(machine: Machine, host: Host, survey: Survey, addresses: tuple[PciAddress, ...],
              driver: str, force: bool) -> Proposal:
    """Each function to DRIVER, as one transaction; no group rule (bind is the tool for
    drivers other than vfio-pci, and for doing by hand what detach does for a group)."""
    check_driver_name(driver)
    found = [host.require(a) for a in addresses]
    moving = [d for d in found if d.driver != driver]
    refuse_unsafe(machine.sysfs, host, survey, moving, force)
    if moving:
        require_driver(machine, driver)
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
        elif not harmless(d) and d.driver_override is None:
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
