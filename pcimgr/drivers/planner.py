"""Host-driver control: plans for detach, rebind, bind and unbind, and running them safely.

Every command validates everything, then plans, then acts: under the lock, after
undoing any transaction a killed run left, with rollback on failure, and with a
record of each function's original driver so that `rebind` can give it back.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import TYPE_CHECKING
from collections.abc import Callable
from dataclasses import dataclass

from pcimgr.plans import lock, records, statefile, transaction as plans
from pcimgr.core.address import PciAddress
from pcimgr.drivers.binding import BindDriver, Reprobe
from pcimgr.core.errors import BadInput, KernelError, NeedsRoot, NotFound, Refused
from pcimgr.host.usage import Survey
from pcimgr.core.model import Host, PciDevice
from pcimgr.drivers.safety import concerns
from pcimgr.host.sysfs import Sysfs
from pcimgr.core.viability import HARMLESS_DRIVERS, blocks_vfio

if TYPE_CHECKING:
    from pcimgr.plans.steps import Step

_DRIVER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
DEFAULT_STATE_DIR = "/var/lib/pcimgr"


def state_dir(sysfs: Sysfs, explicit: str | None) -> str:
    """--state-dir, else inside a simulated host, else /var/lib/pcimgr."""
    if explicit:
        return os.path.abspath(explicit)
    return os.path.join(sysfs.root, ".pcimgr-state") if sysfs.simulated else DEFAULT_STATE_DIR


def check_driver_name(name: str) -> str:
    if not _DRIVER_NAME.fullmatch(name):
        raise BadInput(f"not a driver name: {name!r}; use a module's driver name such as "
                       "vfio-pci or pci-stub")
    return name


@dataclass(frozen=True)
class Proposal:
    """A plan and what it needs before its first step."""

    plan: plans.Plan
    module: str | None       # driver to load first (modprobe), if it is not loaded
    notes: tuple[str, ...]   # no-ops worth telling
    # state files to write (data) or remove (None) once the plan succeeded; relative paths
    records: tuple[tuple[str, dict | None], ...] = ()


def require(host: Host, address: PciAddress) -> PciDevice:
    device = host.get(address)
    if device is None:
        raise NotFound(f"no PCI function {address} on this host; "
                       "`pcimgr list --all` shows the functions there are")
    return device


def module_for(sysfs: Sysfs, driver: str) -> str | None:
    if sysfs.exists(f"bus/pci/drivers/{driver}"):
        return None
    if sysfs.simulated:
        raise NotFound(f"driver {driver} is not loaded on this simulated host")
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


def plan_detach(sysfs: Sysfs, host: Host, survey: Survey, addresses: tuple[PciAddress, ...],
                driver: str, group: bool, force: bool) -> Proposal:
    check_driver_name(driver)
    targets = {d.address: d for d in (require(host, a) for a in addresses)}
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
    refuse_unsafe(sysfs, host, survey, moving, force)
    notes = tuple(f"{d.address} is already on {driver}" for d in targets.values()
                  if d.driver == driver)
    steps = tuple(BindDriver(str(d.address), driver, driver, d.driver, d.driver_override)
                  for d in moving)
    return Proposal(plans.Plan(f"detach {' '.join(str(a) for a in addresses)}", steps),
                    module_for(sysfs, driver) if steps else None, notes)


def plan_bind(sysfs: Sysfs, host: Host, survey: Survey, address: PciAddress, driver: str,
              force: bool) -> Proposal:
    check_driver_name(driver)
    d = require(host, address)
    if d.driver == driver:
        return Proposal(plans.Plan(f"bind {address} {driver}", ()), None,
                        (f"{address} is already on {driver}",))
    refuse_unsafe(sysfs, host, survey, [d], force)
    step = BindDriver(str(address), driver, driver, d.driver, d.driver_override)
    return Proposal(plans.Plan(f"bind {address} {driver}", (step,)), module_for(sysfs, driver), ())


def plan_unbind(sysfs: Sysfs, host: Host, survey: Survey, address: PciAddress,
                force: bool) -> Proposal:
    d = require(host, address)
    if d.driver is None:
        return Proposal(plans.Plan(f"unbind {address}", ()), None, (f"{address} has no driver",))
    refuse_unsafe(sysfs, host, survey, [d], force)
    step = BindDriver(str(address), None, d.driver_override, d.driver, d.driver_override)
    return Proposal(plans.Plan(f"unbind {address}", (step,)), None, ())


def plan_rebind(sysfs: Sysfs, host: Host, addresses: tuple[PciAddress, ...],
                records: dict[str, dict]) -> Proposal:
    steps: list[Step] = []
    notes = []
    for address in addresses:
        d = require(host, address)
        a = str(address)
        record = records.get(a)
        if record is not None:
            if d.driver == record["driver"] and d.driver_override == record["override"]:
                notes.append(f"{a} is already on its original driver {d.driver}")
                continue
            steps.append(BindDriver(a, record["driver"], record["override"], d.driver,
                                    d.driver_override))
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


def needs_root(sysfs: Sysfs) -> None:
    if not sysfs.simulated and os.geteuid() != 0:
        raise NeedsRoot("changing drivers writes to /sys and needs root; run it with sudo "
                        "(add --dry-run to see the plan without root)")


def execute(sysfs: Sysfs, state: str, proposal: Proposal,
            progress: plans.Progress | None = None) -> None:
    """Apply the plan (the caller holds the lock) and, before its journal goes, the records
    of original drivers: worked out first, so a damaged record stops it before any write."""
    changes = records.Changes(state)
    for rel, data in proposal.records:
        changes.set(rel, data)
    created: set[str] = set()
    for step in proposal.plan.steps:
        if step.kind == "numvfs":
            from pcimgr.sriov.steps import SetNumVfs  # imported only where VFs change
            assert isinstance(step, SetNumVfs)
            # VFs made or removed: records about earlier VFs at these addresses are void,
            # and a VF pcimgr created has no host driver to give back
            created.update(step.expect)
            for a in [vf["address"] for vf in step.original_vfs] + list(step.expect):
                changes.set(records.device_rel(a), None)
    for step in proposal.plan.steps:
        if not isinstance(step, (BindDriver, Reprobe)) or step.address in created:
            continue
        rel = records.device_rel(step.address)
        record = changes.get(rel)
        if isinstance(step, Reprobe) or (record is not None and step.target == record["driver"]):
            changes.set(rel, None)  # given back
        elif record is None and step.original_driver not in HARMLESS_DRIVERS:
            # the first time pcimgr moves it: remember where it came from (None: no driver)
            changes.set(rel, {"driver": step.original_driver,
                              "override": step.original_override})
    if proposal.module:
        _modprobe(sysfs, proposal.module)
    plans.execute(proposal.plan, sysfs, state, progress, changes.commit)


def locked(sysfs: Sysfs, state: str, wait: float,
           work: Callable[[str | None], None]) -> None:
    """Run work(recovery message) under the host's lock, after removing the temporary files
    and finishing the transaction a killed run left."""
    with lock.exclusive(lock.host_lock_dir(sysfs), wait):
        statefile.sweep(state, ("", "devices", "assignments"))
        work(plans.recover(sysfs, state))


def _modprobe(sysfs: Sysfs, module: str) -> None:
    try:
        r = subprocess.run(["modprobe", module], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelError(f"cannot load {module}: modprobe failed ({e}); install the module "
                          "or load it by hand") from e
    if r.returncode != 0 or not sysfs.exists(f"bus/pci/drivers/{module}"):
        why = r.stderr.strip() or "no such driver after modprobe"
        raise KernelError(f"cannot load {module}: {why}; check that the kernel has the module")
