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

from pcimgr import hostdriver, plan as plans, sriov, vfinfo
from pcimgr.definitions import Definition, identify
from pcimgr.errors import BadInput, NotFound, PcimgrError, Refused
from pcimgr.hostdriver import Proposal
from pcimgr.hostuse import Survey
from pcimgr.model import Host, PciDevice
from pcimgr.steps import Step
from pcimgr.sysfs import Sysfs
from pcimgr.address import PciAddress

# -- define ----------------------------------------------------------------------

def define(host: Host, existing: Definition | None, address: PciAddress, driver: str | None,
           vfs: int | None, vf_driver: str | None, vf_index: int | None,
           vf_settings: dict[str, Any]) -> Definition:
    device = hostdriver.require(host, address)
    if driver is not None and (vfs is not None or vf_index is not None):
        raise BadInput("a definition is either --driver, or --vfs/--vf for a PF; not both")
    if vf_index is None and vf_settings:
        raise BadInput("--mac/--vlan/--trust/--spoofchk belong to a VF: add --vf INDEX")
    if driver is None and vfs is None and vf_index is None:
        raise BadInput("nothing to define; give --driver DRIVER, or --vfs N (and --vf INDEX "
                       "--mac/--vlan) for an SR-IOV PF")
    if driver is not None:
        hostdriver.check_driver_name(driver)
        return identify(device, driver=driver)
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
            raise BadInput(f"nothing to define for VF {vf_index}; give --mac, --vlan, --trust "
                           "or --spoofchk")
        settings[str(vf_index)] = settings.get(str(vf_index), {}) | vf_settings
    settings = {k: v for k, v in settings.items() if int(k) < count}
    chosen = vf_driver or (base.vf_driver if base else None) or "vfio-pci"
    return identify(pf, vfs=count, vf_driver=chosen, vf=settings)


# -- status --------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    definition: Definition
    drift: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.drift


def status(sysfs: Sysfs, host: Host, definitions: list[Definition]) -> list[Finding]:
    return [Finding(d, tuple(_drift(sysfs, host, d))) for d in definitions]


def _drift(sysfs: Sysfs, host: Host, d: Definition) -> list[str]:
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
    if device.iommu_group != d.iommu_group:
        found.append(f"IOMMU group changed: {device.iommu_group}, defined in {d.iommu_group}")
    if d.driver is not None and device.driver != d.driver:
        found.append(f"driver is {device.driver or 'none'}, defined {d.driver}")
    if d.vfs is not None:
        found += _vf_drift(sysfs, host, device, d)
    return found


def _vf_drift(sysfs: Sysfs, host: Host, pf: PciDevice, d: Definition) -> list[str]:
    numvfs = pf.sriov.numvfs if pf.sriov else 0
    if numvfs != d.vfs:
        return [f"{numvfs} VF(s), defined {d.vfs}"]
    found = []
    vfs = [host.get(a) for a in (pf.sriov.vfs if pf.sriov else ())]
    if d.vf_driver == "vfio-pci":
        off = [str(vf.address) for vf in vfs if vf is not None and vf.driver != "vfio-pci"]
        if off:
            found.append(f"VF(s) not on vfio-pci: {', '.join(off)}")
    configs = vfinfo.read(sysfs, d.address, pf.netdevs[0] if pf.netdevs else None)
    for index, settings in sorted(d.vf.items(), key=lambda kv: int(kv[0])):
        now = configs[int(index)] if int(index) < len(configs) else {}
        for key, want in settings.items():
            if now.get(key) != want:
                found.append(f"VF {index} {key} is {now.get(key)}, defined {want}")
    return found


# -- apply -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ApplyPlan:
    proposal: Proposal
    skipped: tuple[str, ...]     # definitions left alone, and why
    settings: tuple[Definition, ...]  # PFs whose VF settings follow once the VFs are there


def plan_apply(sysfs: Sysfs, host: Host, survey: Survey, definitions: list[Definition],
               timeout: float, guests: Mapping[PciAddress, list[Any]] | None = None) -> ApplyPlan:
    """guests: libvirt's holdings when it could be asked (not at early boot): a VF a domain
    names is not removed to reach a defined count."""
    steps: list[Step] = []
    notes: list[str] = []
    skipped: list[str] = []
    module = None
    later = []
    for d in definitions:
        device = host.get(PciAddress.parse(d.address))
        if device is None or device.ids != d.ids:
            skipped.append(f"{d.address}: " + _drift(sysfs, host, d)[0] + "; not applied")
            continue
        try:
            if d.driver is not None:
                p = hostdriver.plan_bind(sysfs, host, survey, device.address, d.driver, False)
            else:
                assert d.vfs is not None and d.vf_driver is not None
                p = sriov.plan_create(sysfs, host, survey, device.address, d.vfs, d.vf_driver,
                                      False, timeout, False, guests)
                if d.vf:
                    later.append(d)
        except Refused as e:
            # there is nobody to pass --force when udev runs apply
            skipped.append(f"{d.address}: " + (
                f"{e.problem}; apply never forces (run the command by hand with --force)"
                if e.forceable else str(e)))
            continue
        except PcimgrError as e:
            skipped.append(f"{d.address}: {e}")
            continue
        steps += p.plan.steps
        notes += p.notes
        module = module or p.module
    proposal = Proposal(plans.Plan("apply", tuple(steps)), module, tuple(notes))
    return ApplyPlan(proposal, tuple(skipped), tuple(later))


def plan_vf_settings(sysfs: Sysfs, host: Host, d: Definition, timeout: float) -> Proposal:
    """The defined VF properties of one PF, once its VFs exist (a second transaction)."""
    steps: list[Step] = []
    for index, settings in sorted(d.vf.items(), key=lambda kv: int(kv[0])):
        p = sriov.plan_set(sysfs, host, PciAddress.parse(d.address), int(index), settings,
                           timeout)
        steps += p.plan.steps
    return Proposal(plans.Plan(f"apply VF settings of {d.address}", tuple(steps)), None, ())


def select(definitions: list[Definition], address: PciAddress | None) -> list[Definition]:
    if address is None:
        return definitions
    chosen = [d for d in definitions if d.address == str(address)]
    if not chosen:
        raise NotFound(f"{address} has no definition; `pcimgr status` lists the definitions")
    return chosen


def without_vf(d: Definition, index: int | None) -> Definition | None:
    """undefine --vf INDEX drops one VF's settings; without it the whole definition goes."""
    if index is None:
        return None
    if str(index) not in d.vf:
        raise BadInput(f"{d.address} has no settings defined for VF {index}")
    return replace(d, vf={k: v for k, v in d.vf.items() if k != str(index)})
