"""define / apply / status: make the host match the definitions, and say where it does not.

apply goes through the same plans, journal and refusals as the commands a
person runs: a definition is never a way around a safety refusal (udev runs
apply at boot, when nobody is there to read a warning). A definition whose
hardware is gone or changed is skipped, never applied to whatever sits at the
address now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, PcimgrError, Refused
from pcimgr.core.model import Host, PciDevice
from pcimgr.core.readiness import vfio_name
from pcimgr.core.vfconfig import VfConfig
from pcimgr.core.viability import blocks_vfio, harmless, harmless_name
from pcimgr.drivers import planner as drivers
from pcimgr.drivers import safety
from pcimgr.host import vfinfo, vgpus
from pcimgr.host.machine import Machine
from pcimgr.host.usage import Survey
from pcimgr.mdev import vgpu
from pcimgr.persist.definitions import Definition, group_members, identify
from pcimgr.plans import transaction as plans
from pcimgr.plans.runner import Proposal
from pcimgr.plans.step import Step
from pcimgr.sriov import planner as sriov

VGPU = "vgpu_type"  # a VF setting that is no netlink property: mdev/vgpu.py writes it
VGPU_NAME = "vgpu_name"  # its name, for the exports (not a setting of the VF)

# -- define ----------------------------------------------------------------------

def define(host: Host, existing: Definition | None, address: PciAddress, driver: str | None,
           vfs: int | None, vf_driver: str | None, vf_index: int | None,
           vf_settings: dict[str, Any], owner: str | None = None) -> Definition:
    device = host.require(address)
    if owner is not None:
        from pcimgr.drivers import owner as owners
        if not vfio_name(driver):
            raise BadInput("--owner gives the function's VFIO device nodes to a user: define "
                           "it with --driver vfio-pci (or a VFIO variant)")
        owners.resolve(owner)
    if driver is not None and (vfs is not None or vf_index is not None):
        raise BadInput("a definition is either --driver, or --vfs/--vf for a PF; not both")
    if vf_index is None and vf_settings:
        raise BadInput("--mac/--vlan/--trust/--spoofchk/--vgpu-type belong to a VF: add --vf "
                       "INDEX")
    if driver is None and vfs is None and vf_index is None:
        raise BadInput("nothing to define; give --driver DRIVER, or --vfs N (and --vf INDEX "
                       "--mac/--vlan) for an SR-IOV PF")
    if driver is not None:
        drivers.check_driver_name(driver)
        return identify(host, device, driver=driver, owner=owner)
    pf = sriov.require_pf(host, address)
    assert pf.sriov is not None
    base = existing if existing is not None and existing.vfs is not None else None
    count = vfs if vfs is not None else (base.vfs if base else None)
    if count is None:
        raise BadInput(f"define the VF count first: `pcimgr define {address} --vfs N`")
    if not 1 <= count <= pf.sriov.totalvfs:
        raise BadInput(f"{address} supports 1 to {pf.sriov.totalvfs} VFs (sriov_totalvfs)")
    settings = dict(base.vf) if base else {}
    if vf_index is not None:
        if not 0 <= vf_index < count:
            raise BadInput(f"VF {vf_index} does not exist with {count} VF(s); indexes run from "
                           f"0 to {count - 1}")
        if not vf_settings:
            raise BadInput(f"nothing to define for VF {vf_index}; give --mac, --vlan, --trust, "
                           "--spoofchk or --vgpu-type")
        merged = settings.get(str(vf_index), {}) | vf_settings
        if VGPU in vf_settings and VGPU_NAME not in vf_settings:
            merged.pop(VGPU_NAME, None)  # the name of the type defined before
        settings[str(vf_index)] = merged
    settings = {k: v for k, v in settings.items() if int(k) < count}
    chosen = vf_driver or (base.vf_driver if base else None) or "vfio-pci"
    types = sorted({v[VGPU] for v in settings.values() if VGPU in v})
    if len(types) > 1:
        # NVIDIA's driver takes one framebuffer size per GPU by default, and the catalogs do
        # not say the sizes: one type per PF is what can be checked before the boot tries it
        raise BadInput(f"the VFs of {address} would have different vGPU types "
                       f"({', '.join(map(str, types))}); a GPU takes vGPUs of one framebuffer "
                       "size at a time: define the same type on each VF")
    if chosen != "host" and any(VGPU in v for v in settings.values()):
        raise BadInput(f"a vGPU type needs {address}'s VFs on their own driver (nvidia registers "
                       "them with VFIO itself; on vfio-pci they have no vGPU interface): add "
                       "--vf-driver host")
    return identify(host, pf, vfs=count, vf_driver=chosen, vf=settings)


def with_group(host: Host, d: Definition, others: Mapping[str, Definition]) -> list[Definition]:
    """define --group: the same driver for every endpoint of the group that would be on a
    host driver at boot (boot_gaps)."""
    device = host.require(PciAddress.parse(d.address))
    found = [d]
    for mate in boot_gaps(host, device, others):
        found.append(identify(host, mate, driver=d.driver))
    return found


def boot_gaps(host: Host, device: PciDevice, defined: Mapping[str, Definition]) -> list[PciDevice]:
    """Group mates that would keep VFIO from using the group after a reboot, whatever they
    are on now: at boot a driver-bound endpoint gets its host driver again unless it is
    defined onto vfio-pci or pci-stub (a mate detached by hand is no definition)."""
    group = host.groups.get(device.iommu_group) if device.iommu_group is not None else None
    return [m for m in (group.members if group else ()) if m.address != device.address
            and not m.is_bridge and m.driver is not None
            and not _stubbed(defined.get(str(m.address)))]


def group_gaps(host: Host, device: PciDevice, defined: Mapping[str, Definition]) -> list[PciDevice]:
    """Group mates that would keep VFIO from using the group: on a host driver, and not
    defined onto vfio-pci or pci-stub."""
    group = host.groups.get(device.iommu_group) if device.iommu_group is not None else None
    return [m for m in (group.members if group else ()) if m.address != device.address
            and blocks_vfio(m) and not _stubbed(defined.get(str(m.address)))]


def _stubbed(d: Definition | None) -> bool:
    return d is not None and harmless_name(d.driver)


def check(machine: Machine, host: Host, survey: Survey, new: list[Definition],
          defined: Mapping[str, Definition], timeout: float) -> None:
    """The checks the change itself would run now: a definition is applied at every boot
    with nobody there to read a warning, so it is never a way around them."""
    everything = {**defined, **{d.address: d for d in new}}
    for d in new:
        device = host.require(PciAddress.parse(d.address))
        try:
            if d.driver is not None:
                _check_driver(machine, host, survey, device, d, everything)
            else:
                assert d.vfs is not None and d.vf_driver is not None
                sriov.plan_create(machine, host, survey, device.address, d.vfs, d.vf_driver,
                                  False, timeout, False)
                _check_vgpu_types(machine, device, d)
        except Refused as e:
            if not e.forceable:
                raise
            raise Refused(f"{e.problem.replace('refusing:', 'refusing to define:', 1)}; a "
                          "definition is applied at every boot: stop using it first") from None


def _check_vgpu_types(machine: Machine, pf: PciDevice, d: Definition) -> None:
    """A defined vGPU type on a VF there now: the VF has the interface and can take the type
    (or has it). VFs not created yet are checked when apply sets it."""
    vfs = pf.sriov.vfs if pf.sriov else ()
    for index, settings in d.vf.items():
        if VGPU not in settings or int(index) >= len(vfs):
            continue
        now = vgpus.read(machine.sysfs, str(vfs[int(index)]))
        if now is None:
            raise BadInput(f"VF {index} of {d.address} ({vfs[int(index)]}) has no vendor vGPU "
                           "interface, so --vgpu-type cannot be set on it")
        if now.current != settings[VGPU] and settings[VGPU] not in {t.id for t in now.creatable}:
            offered = ", ".join(f"{t.id} ({t.name})" for t in now.creatable) or "none"
            raise BadInput(f"VF {index} of {d.address} cannot take vGPU type {settings[VGPU]}; "
                           f"it can take: {offered}")


def _check_driver(machine: Machine, host: Host, survey: Survey, device: PciDevice, d: Definition,
                  defined: Mapping[str, Definition]) -> None:
    assert d.driver is not None
    if device.driver != d.driver:
        drivers.refuse_unsafe(machine.sysfs, host, survey, [device], False)
    drivers.require_driver(machine, d.driver)
    if vfio_name(d.driver):
        if not host.iommu_enabled:
            raise Refused("refusing: the IOMMU is off, so vfio-pci cannot take any function; "
                          "add intel_iommu=on (Intel) or amd_iommu=on (AMD) to the kernel "
                          "command line and reboot")
        gaps = boot_gaps(host, device, defined)
        if gaps:
            raise Refused(f"refusing: {device.address} shares IOMMU group {device.iommu_group} "
                          "with " + ", ".join(_at_boot(m) for m in gaps)
                          + ", and VFIO can use the group only when they leave their drivers "
                          "too: pass --group to define them together")


def _at_boot(mate: PciDevice) -> str:
    if harmless(mate):
        return f"{mate.address} (on {mate.driver} now, undefined: on its host driver at boot)"
    return f"{mate.address} (on {mate.driver})"


# -- status --------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    definition: Definition
    drift: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.drift


def status(machine: Machine, host: Host, survey: Survey,
           definitions: list[Definition]) -> list[Finding]:
    defined = {d.address: d for d in definitions}
    return [Finding(d, tuple(_drift(machine, host, d) + _unsafe(machine, host, survey, d, defined)))
            for d in definitions]


def _unsafe(machine: Machine, host: Host, survey: Survey, d: Definition,
            defined: Mapping[str, Definition]) -> list[str]:
    """What keeps apply from making a driver definition so: the host uses the function, or
    its group would not be viable."""
    device = host.get(PciAddress.parse(d.address))
    if d.driver is None or device is None or device.ids != d.ids:
        return []
    found = []
    if device.driver != d.driver:
        uses = safety.host_use(machine.sysfs, device, survey)
        if uses:
            found.append(f"the host uses it ({', '.join(uses)}): apply will not take it")
    if vfio_name(d.driver):
        gaps = boot_gaps(host, device, defined)  # as at boot: a detach by hand does not last
        if gaps:
            found.append(f"IOMMU group {device.iommu_group} is not viable: "
                         + ", ".join(f"{m.address} on {m.driver}"
                                     + (" now, undefined" if harmless(m) else "")
                                     for m in gaps)
                         + " (define them too, or undefine this one)")
    return found


def _drift(machine: Machine, host: Host, d: Definition) -> list[str]:
    device = host.get(PciAddress.parse(d.address))
    if device is None:
        return ["missing: no function at this address"]
    found = []
    if device.ids != d.ids:
        return [f"different hardware: {device.ids} here, {d.ids} defined"]
    subsystem = (device.subsystem_vendor_id, device.subsystem_device_id)
    if subsystem != (d.subsystem_vendor_id, d.subsystem_device_id):
        found.append(f"different subsystem: {subsystem[0]}:{subsystem[1]} here, "
                     f"{d.subsystem_vendor_id}:{d.subsystem_device_id} defined")
    members = group_members(host, device)
    if d.group_members is not None and members != d.group_members:
        found.append("IOMMU group members changed: "
                     + (", ".join(members) if members else "no group")
                     + f" now, defined with {', '.join(d.group_members)}")
    if d.driver is not None and device.driver != d.driver:
        found.append(f"driver is {device.driver or 'none'}, defined {d.driver}")
    if d.vfs is not None:
        found += _vf_drift(machine, host, device, d)
    if device.driver == d.driver:
        found += _owner_drift(machine, d)
    return found


def _owner_drift(machine: Machine, d: Definition) -> list[str]:
    if d.owner is None:
        return []
    from pcimgr.drivers import owner as owners
    try:
        return owners.drift(machine.sysfs, d.address, d.owner)
    except BadInput as e:  # the user or group is gone from this host
        return [str(e)]


def _vf_drift(machine: Machine, host: Host, pf: PciDevice, d: Definition) -> list[str]:
    numvfs = pf.sriov.numvfs if pf.sriov else 0
    if numvfs != d.vfs:
        return [f"{numvfs} VF(s), defined {d.vfs}"]
    found = []
    vfs = [host.get(a) for a in (pf.sriov.vfs if pf.sriov else ())]
    if d.vf_driver == "vfio-pci":
        off = [str(vf.address) for vf in vfs if vf is not None and vf.driver != "vfio-pci"]
        if off:
            found.append(f"VF(s) not on vfio-pci: {', '.join(off)}")
    configs = vfinfo.read(machine, d.address, pf.netdevs[0] if pf.netdevs else None)
    for index, settings in sorted(d.vf.items(), key=lambda kv: int(kv[0])):
        now = configs[int(index)] if int(index) < len(configs) else VfConfig()
        for key, want in settings.items():
            if key == VGPU_NAME:
                continue
            if key == VGPU:
                vf = vfs[int(index)] if int(index) < len(vfs) else None
                current = vgpus.read(machine.sysfs, str(vf.address)) if vf else None
                if current is None or current.current != want:
                    found.append(f"VF {index} vGPU type is "
                                 f"{current.current or 'none' if current else 'unknown'}, "
                                 f"defined {want}")
            elif now.get(key) != want:
                found.append(f"VF {index} {key} is {now.get(key)}, defined {want}")
    return found


# -- apply -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ApplyPlan:
    proposal: Proposal
    skipped: tuple[str, ...]     # definitions left alone, and why
    settings: tuple[Definition, ...]  # PFs whose VF settings follow once the VFs are there


def plan_apply(machine: Machine, host: Host, survey: Survey, definitions: list[Definition],
               timeout: float, guests: Mapping[PciAddress, list[Any]] | None = None) -> ApplyPlan:
    """guests: libvirt's holdings when it could be asked (not at early boot): a VF a domain
    names is not removed to reach a defined count."""
    skipped: list[str] = []
    planned: dict[str, tuple[Definition, Proposal]] = {}
    for d in definitions:
        device = host.get(PciAddress.parse(d.address))
        if device is None or device.ids != d.ids:
            skipped.append(f"{d.address}: " + _drift(machine, host, d)[0] + "; not applied")
            continue
        try:
            if d.driver is not None:
                p = drivers.plan_bind(machine, host, survey, (device.address,), d.driver, False)
                if d.owner is not None and (p.plan.steps or _owner_drift(machine, d)):
                    p = p._replace(plan=plans.Plan(p.plan.command, p.plan.steps + drivers.owning(
                        d.owner, [d.address], [d.driver], [False])))
            else:
                assert d.vfs is not None and d.vf_driver is not None
                p = sriov.plan_create(machine, host, survey, device.address, d.vfs, d.vf_driver,
                                      False, timeout, False, guests)
        except Refused as e:
            # there is nobody to pass --force when udev runs apply
            skipped.append(f"{d.address}: " + (
                f"{e.problem}; apply never forces (run the command by hand with --force)"
                if e.forceable else str(e)))
            continue
        except PcimgrError as e:
            skipped.append(f"{d.address}: {e}")
            continue
        planned[d.address] = (d, p)
    skipped += _drop_partial_groups(host, planned)
    steps: list[Step] = []
    notes: list[str] = []
    module = None
    for _, p in planned.values():
        steps += p.plan.steps
        notes += p.notes
        module = module or p.module
    later = tuple(d for d, _ in planned.values() if d.vf)
    proposal = Proposal(plans.Plan("apply", tuple(steps)), module, tuple(notes))
    return ApplyPlan(proposal, tuple(skipped), later)


def _drop_partial_groups(host: Host, planned: dict[str, tuple[Definition, Proposal]]) -> list[str]:
    """Never leave a group half on vfio-pci: a vfio-pci definition goes only with every mate
    still on a host driver going too (a mate's skip can take others with it)."""
    skipped = []
    changed = True
    while changed:
        changed = False
        going = {a: d for a, (d, _) in planned.items()}
        for a, (d, _) in list(planned.items()):
            device = host.get(PciAddress.parse(a))
            if not vfio_name(d.driver) or device is None or device.driver == d.driver:
                continue
            gaps = group_gaps(host, device, going)
            if gaps:
                del planned[a]
                changed = True
                skipped.append(
                    f"{a}: IOMMU group {device.iommu_group} would not be viable: "
                    + ", ".join(f"{m.address} stays on {m.driver}" for m in gaps)
                    + f"; define them too (`pcimgr define {a} --driver {d.driver} --group`)")
    return skipped


def plan_vf_settings(machine: Machine, host: Host, d: Definition, timeout: float) -> Proposal:
    """The defined VF properties of one PF, once its VFs exist (a second transaction)."""
    steps: list[Step] = []
    pf = host.require(PciAddress.parse(d.address))
    vfs = pf.sriov.vfs if pf.sriov else ()
    for index, settings in sorted(d.vf.items(), key=lambda kv: int(kv[0])):
        link = {k: v for k, v in settings.items() if k not in (VGPU, VGPU_NAME)}
        if link:
            steps += sriov.plan_set(machine, host, pf.address, int(index), link,
                                    timeout).plan.steps
        if VGPU in settings and int(index) < len(vfs):  # after the siblings before it
            steps += vgpu.plan_set(machine, vfs[int(index)], str(settings[VGPU]), (),
                                   ()).plan.steps
    return Proposal(plans.Plan(f"apply VF settings of {d.address}", tuple(steps)), None, ())


def select(definitions: list[Definition], address: PciAddress | None) -> list[Definition]:
    """One function's definition (what udev applies when it appears) with those of its IOMMU
    group: the group is applied whole or not at all (definitions.select)."""
    from pcimgr.persist.definitions import select as chosen
    return chosen(definitions, address)


def without_vf(d: Definition, index: int | None) -> Definition | None:
    """undefine --vf INDEX drops one VF's settings; without it the whole definition goes."""
    if index is None:
        return None
    if str(index) not in d.vf:
        raise BadInput(f"{d.address} has no settings defined for VF {index}")
    return replace(d, vf={k: v for k, v in d.vf.items() if k != str(index)})
