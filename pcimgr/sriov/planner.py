"""SR-IOV virtual functions: what there is (`vfs list`) and plans for create, destroy and set.

The kernel's rules these plans honour (seen on a real 82576/igb, tests/lab):
a non-zero count changes only through 0; above sriov_totalvfs is ERANGE; only the
PF's own driver can create VFs (vfio-pci cannot, by default); removing a VF whose
/dev/vfio group a process holds blocks until it lets go; VFs meant for vfio-pci
are created with sriov_drivers_autoprobe off, so no host driver or interface
ever appears for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, NotFound, Refused
from pcimgr.core.model import Host, PciDevice
from pcimgr.core.readiness import readiness
from pcimgr.core.vfconfig import VfConfig
from pcimgr.core.viability import harmless
from pcimgr.drivers.binding import BindDriver, Reprobe
from pcimgr.drivers.planner import module_for, refuse_unsafe
from pcimgr.host import vfinfo
from pcimgr.host.machine import Machine
from pcimgr.host.usage import Survey
from pcimgr.plans import transaction as plans
from pcimgr.plans.runner import Proposal
from pcimgr.plans.step import Step
from pcimgr.sriov.steps import ConfigureVf, SetAutoprobe, SetLink, SetNumVfs

VFIO = "vfio-pci"


@dataclass(frozen=True)
class PfView:
    """One PF with its VFs, their properties and who holds their /dev/vfio groups."""

    pf: PciDevice
    vfs: tuple[PciDevice, ...]
    configs: tuple[VfConfig, ...]          # per VF index; empty without a PF netdev
    link_up: bool | None                   # the PF's interface; None without one
    holders: dict[int, list[str]]          # IOMMU group -> processes with it open


def require_pf(host: Host, address: PciAddress) -> PciDevice:
    pf = host.get(address)
    if pf is None:
        raise NotFound(f"no PCI function {address} on this host; "
                       "`pcimgr vfs list` shows the SR-IOV capable ones")
    if pf.physfn is not None:
        raise BadInput(f"{address} is a VF of {pf.physfn}; give the PF's address")
    if pf.sriov is None:
        raise BadInput(f"{address} is not SR-IOV capable (it has no sriov_totalvfs); "
                       "`pcimgr vfs list` shows the functions that are")
    return pf


def survey(machine: Machine, host: Host, only: PciAddress | None = None) -> list[PfView]:
    pfs = [require_pf(host, only)] if only else [d for d in host.devices if d.sriov]
    views = []
    holders: dict[int, list[str]] | None = None
    for pf in pfs:
        assert pf.sriov is not None
        vfs = tuple(vf for vf in (host.get(a) for a in pf.sriov.vfs) if vf is not None)
        if holders is None and any(vf.driver == VFIO for vf in vfs):
            holders = machine.vfio_holders()  # a /proc scan: only when it can matter
        netdev = pf.netdevs[0] if pf.netdevs else None
        views.append(PfView(pf, vfs, tuple(vfinfo.read(machine, str(pf.address), netdev)),
                            vfinfo.link_is_up(machine.sysfs, str(pf.address),
                                              netdev) if netdev else None,
                            holders or {}))
    return views


# -- create ------------------------------------------------------------------

def plan_create(machine: Machine, host: Host, survey: Survey, address: PciAddress, count: int,
                driver: str, pf_up: bool, timeout: float, force: bool,
                guests: Mapping[PciAddress, list[Any]] | None = None) -> Proposal:
    pf = require_pf(host, address)
    s = pf.sriov
    assert s is not None
    if count < 1:
        raise BadInput(f"a VF count must be at least 1; `pcimgr vfs destroy {address}` "
                       "removes the VFs")
    if count > s.totalvfs:
        raise BadInput(f"{address} supports at most {s.totalvfs} VFs"
                       + (f" under {pf.driver}" if pf.driver else "")
                       + f" (sriov_totalvfs); ask for {s.totalvfs} or fewer")
    _require_pf_driver(pf)
    if driver == VFIO and not host.iommu_enabled:
        raise Refused("refusing: the IOMMU is off, so vfio-pci cannot take the VFs; add "
                      "intel_iommu=on (Intel) or amd_iommu=on (AMD) to the kernel command "
                      "line and reboot, or create them with --driver host")
    a = str(address)
    netdev = pf.netdevs[0] if pf.netdevs else None
    steps: list[Step] = []
    notes: list[str] = []
    if netdev and not vfinfo.link_is_up(machine.sysfs, a, netdev):
        if pf_up:
            steps.append(SetLink(a, netdev, True))
        else:
            notes.append(f"warning: {netdev} (the PF) is down; VFs created now get no carrier "
                         "on igb, and libvirt will not start a guest with one as <interface "
                         "type='hostdev'>; pass --pf-up to bring it up first")
    if s.numvfs == count:
        notes.append(f"{a} already has {count} VF(s)")
        rebinds = _rebind_existing(host, s.vfs, driver)
        # the VFs are there and may be the host's own: moving them is a change like detach
        refuse_unsafe(machine.sysfs, host, survey,
                      [host.require(PciAddress.parse(r.address)) for r in rebinds], force)
        steps += rebinds
        return _proposal(machine, f"vfs create {a} {count}", steps, driver, notes)
    if s.numvfs:
        _refuse_busy_vfs(machine, host, survey, pf, force, guests)
        steps.append(_remove(machine, host, pf, timeout))
    autoprobe = s.drivers_autoprobe
    want_autoprobe = driver != VFIO  # host VF driver: it must probe; vfio-pci: nothing may
    switch = autoprobe is not None and autoprobe != want_autoprobe
    if switch:
        assert autoprobe is not None
        steps.append(SetAutoprobe(a, want_autoprobe, autoprobe))
    expect = vf_addresses(pf, count)
    steps.append(SetNumVfs(a, count, 0, (), netdev, timeout, wait_drivers=driver != VFIO,
                           expect=expect))
    if driver == VFIO:
        steps += [BindDriver(vf, VFIO, VFIO, None, None) for vf in expect]
    if switch:
        assert autoprobe is not None
        steps.append(SetAutoprobe(a, autoprobe, want_autoprobe))
    return _proposal(machine, f"vfs create {a} {count}", steps, driver, notes)


def _require_pf_driver(pf: PciDevice) -> None:
    a = pf.address
    if pf.driver is None:
        raise Refused(f"refusing: {a} has no driver, and only the PF's own driver can create "
                      f"VFs; `pcimgr rebind {a}` gives it its host driver back")
    if harmless(pf):
        raise Refused(f"refusing: {a} is on {pf.driver}, which cannot create VFs (vfio-pci's "
                      f"enable_sriov is off); give it back to its host driver first: "
                      f"`pcimgr rebind {a}`")


def vf_addresses(pf: PciDevice, count: int) -> tuple[str, ...]:
    """Where the PF's first COUNT VFs appear (First VF Offset and VF Stride)."""
    s = pf.sriov
    if s is None or s.offset is None or s.stride is None:
        return ()
    return tuple(str(PciAddress.from_routing_id(pf.address.domain,
                                                pf.address.routing_id + s.offset + i * s.stride))
                 for i in range(count))


def _rebind_existing(host: Host, vfs: tuple[PciAddress, ...], driver: str) -> list[Step]:
    steps: list[Step] = []
    for a in vfs:
        vf = host.get(a)
        if vf is None:
            continue
        if driver == VFIO and vf.driver != VFIO:
            steps.append(BindDriver(str(a), VFIO, VFIO, vf.driver, vf.driver_override))
        elif driver != VFIO and (vf.driver is None or harmless(vf)
                                 and readiness(vf).kind != "vendor"):
            # a VF on its own driver that registers it with VFIO (NVIDIA's vGPU VFs) is on
            # its host driver already: a reprobe would drop its vGPU type
            steps.append(Reprobe(str(a), vf.driver, vf.driver_override))
    return steps


def _proposal(machine: Machine, command: str, steps: list[Step], driver: str,
              notes: list[str]) -> Proposal:
    binds = any(isinstance(s, BindDriver) for s in steps)
    return Proposal(plans.Plan(command, tuple(steps)),
                    module_for(machine, driver) if binds else None, tuple(notes))


# -- destroy -------------------------------------------------------------------

def plan_destroy(machine: Machine, host: Host, survey: Survey, address: PciAddress,
                 timeout: float, force: bool,
                 guests: Mapping[PciAddress, list[Any]] | None = None) -> Proposal:
    pf = require_pf(host, address)
    assert pf.sriov is not None
    if not pf.sriov.numvfs:
        return Proposal(plans.Plan(f"vfs destroy {address}", ()), None,
                        (f"{address} has no VFs",))
    _require_pf_driver(pf)
    _refuse_busy_vfs(machine, host, survey, pf, force, guests)
    return Proposal(plans.Plan(f"vfs destroy {address}", (_remove(machine, host, pf, timeout),)),
                    None, ())


def _remove(machine: Machine, host: Host, pf: PciDevice, timeout: float) -> SetNumVfs:
    """Going to 0, remembering each VF (driver, override, properties) for undo."""
    assert pf.sriov is not None
    netdev = pf.netdevs[0] if pf.netdevs else None
    configs = vfinfo.read(machine, str(pf.address), netdev)
    before = []
    for index, a in enumerate(pf.sriov.vfs):
        vf = host.get(a)
        before.append({"address": str(a), "driver": vf.driver if vf else None,
                       "override": vf.driver_override if vf else None,
                       "config": configs[index].as_dict() if index < len(configs) else None})
    return SetNumVfs(str(pf.address), 0, pf.sriov.numvfs, tuple(before), netdev, timeout,
                     wait_drivers=False)


def _refuse_busy_vfs(machine: Machine, host: Host, survey: Survey, pf: PciDevice,
                     force: bool, guests: Mapping[PciAddress, list[Any]] | None) -> None:
    """Removing a VF a process holds would block the kernel until it lets go: never start.
    Nor remove one a guest's configuration names (guests: the libvirt holdings, if known)."""
    assert pf.sriov is not None
    vfs = [vf for vf in (host.get(a) for a in pf.sriov.vfs) if vf is not None]
    assigned = [f"{vf.address} ({', '.join(f'{h.domain}, {h.where}' for h in guests[vf.address])})"
                for vf in vfs if guests and guests.get(vf.address)]
    if assigned:
        raise Refused(f"refusing: VFs of {pf.address} are assigned to guests: "
                      f"{'; '.join(assigned)}; `pcimgr release VF` each of them first")
    holders = machine.vfio_holders() if any(vf.driver == VFIO for vf in vfs) else {}
    busy = [f"{vf.address} (IOMMU group {vf.iommu_group}, /dev/vfio/{vf.iommu_group} open by "
            f"{', '.join(holders[vf.iommu_group])})"
            for vf in vfs if vf.iommu_group in holders]
    if busy:
        raise Refused(f"refusing: removing the VFs of {pf.address} would block until they are "
                      f"released: {'; '.join(busy)}; stop the guests or processes using them "
                      "first")
    refuse_unsafe(machine.sysfs, host, survey, vfs, force)


# -- set -------------------------------------------------------------------------

def plan_set(machine: Machine, host: Host, address: PciAddress, index: int,
             settings: dict[str, Any], timeout: float) -> Proposal:
    pf = require_pf(host, address)
    assert pf.sriov is not None
    if not settings:
        raise BadInput("nothing to set; give --mac, --vlan, --trust, --spoofchk or --state")
    if not 0 <= index < pf.sriov.numvfs:
        raise BadInput(f"{address} has {pf.sriov.numvfs} VF(s), so there is no VF {index}"
                       + (f"; indexes run from 0 to {pf.sriov.numvfs - 1}" if pf.sriov.numvfs
                          else f"; create them first with `pcimgr vfs create {address} N`"))
    if not pf.netdevs:
        raise Refused(f"refusing: VF properties are kept by the PF's driver and set through "
                      f"its interface, and {address} has none (it is on "
                      f"{pf.driver or 'no driver'})")
    netdev = pf.netdevs[0]
    configs = vfinfo.read(machine, str(address), netdev)
    current = configs[index] if index < len(configs) else VfConfig()
    if vfinfo.qos_without_vlan(settings):
        raise BadInput("--qos sets the priority of a VLAN; give --vlan with it")
    changed = {k: v for k, v in settings.items() if current.get(k) != v}
    if "vlan" in changed or "qos" in changed:
        changed |= {"vlan": settings.get("vlan", current.vlan or 0),
                    "qos": settings.get("qos", 0)}
    command = f"vfs set {address} {index}"
    if not changed:
        return Proposal(plans.Plan(command, ()), None,
                        (f"VF {index} of {address} already has {vfinfo.describe(settings)}",))
    original = {k: current.get(k) for k in changed}
    return Proposal(plans.Plan(command, (ConfigureVf(str(address), netdev, index, changed,
                                                    original, timeout),)), None, ())
