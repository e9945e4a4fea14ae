"""A PF's VF count, the VFs' driver and per-VF MAC/VLAN/QoS/trust/spoof check, optionally
kept across reboots by a definition: the pcimgr_vfs module.

Two transactions, as `pcimgr apply` does: the count (sriov.plan_create or plan_destroy),
then the VF settings through the PF once the VFs exist (sriov.plan_set). Everything that
can be checked before the first write is: the plans' refusals, the definition's, each
setting's index and value (by the CLI's rules), and that the PF has the interface settings
go through. The definition is written before both and put back if they fail.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pcimgr.cli import rules
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, Refused
from pcimgr.core.model import Host
from pcimgr.fleet.session import Result, Session
from pcimgr.host import discovery, vfinfo
from pcimgr.persist import definitions
from pcimgr.persist import planner as persist
from pcimgr.sriov import planner as sriov
from pcimgr.sriov.steps import SetNumVfs

SETTINGS = ("mac", "vlan", "qos", "trust", "spoofchk")


def check_settings(count: int, given: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """index -> the settings given for that VF (None values dropped), validated by the rules
    of `vfs create` and `vfs set`."""
    count = rules.checked(rules.VF_COUNT, count, "count")
    found: dict[int, dict[str, Any]] = {}
    for entry in given:
        index = rules.checked(rules.VF_INDEX, entry["index"], "vfs[].index")
        if not index < count:
            raise BadInput(f"VF {index} does not exist with {count} VF(s); indexes run from 0 "
                           f"to {count - 1}" if count else
                           f"VF settings need VFs; give a count of at least {index + 1}")
        if index in found:
            raise BadInput(f"VF {index} is given twice; give each VF's settings once")
        settings = {k: entry[k] for k in SETTINGS if entry.get(k) is not None}
        if not settings:
            raise BadInput(f"nothing to set for VF {index}; give mac, vlan, qos, trust or "
                           "spoofchk")
        for key, rule in (("vlan", rules.VF_VLAN), ("qos", rules.QOS)):
            if key in settings:
                settings[key] = rules.checked(rule, settings[key], f"VF {index}: {key}")
        if vfinfo.qos_without_vlan(settings):
            raise BadInput(f"VF {index}: qos sets the priority of a VLAN; give vlan with it")
        if "mac" in settings:
            settings["mac"] = vfinfo.check_mac(settings["mac"])
        found[index] = settings
    return found


def ensure(s: Session, pf: PciAddress, count: int, driver: str, given: list[dict[str, Any]],
           pf_up: bool, persistent: bool, force: bool, timeout: float) -> Result:
    settings = check_settings(count, given)
    timeout = rules.checked(rules.TIMEOUT, timeout, "timeout")

    def work() -> Result:
        host, survey = s.scan((pf,))
        device = sriov.require_pf(host, pf)
        if settings and not device.netdevs:
            raise Refused(f"refusing: VF settings go through the PF's interface, and {pf} has "
                          f"none (it is on {device.driver or 'no driver'})")
        defined = {d.address: d for d in definitions.load_all(s.config_dir)[0]}
        old = defined.get(str(pf))
        result = Result(before=_view(s, host, pf, settings, old))
        if count:
            proposal = sriov.plan_create(s.machine, host, survey, pf, count, driver, pf_up,
                                         timeout, force, s.context.holdings())
        else:
            proposal = sriov.plan_destroy(s.machine, host, survey, pf, timeout, force,
                                          s.context.holdings())
        new = None
        if persistent and count:
            new = persist.define(host, None, pf, None, count, driver, None, {})
            for index, each in sorted(settings.items()):
                new = persist.define(host, new, pf, None, None, None, index, each)
            persist.check(s.machine, host, survey, [new], defined, timeout)
        redefine = persistent and (asdict(new) if new else None) != (asdict(old) if old and
                                                                     old.vfs else None)
        result.add(proposal)
        recount = any(isinstance(st, SetNumVfs) for st in proposal.plan.steps)
        if s.check_mode:
            if recount:  # new VFs start with the driver's defaults: every setting is a change
                result.plan += [f"then VF {i}: {vfinfo.describe(v)}"
                                for i, v in sorted(settings.items())]
                result.changed = result.changed or bool(settings)
            else:
                for index, each in sorted(settings.items()):
                    result.add(sriov.plan_set(s.machine, host, pf, index, each, timeout))
        else:
            def move() -> None:
                s.execute(proposal)
                for index, each in sorted(settings.items()):
                    now = discovery.scan_related(s.machine.sysfs, (pf,))
                    step = sriov.plan_set(s.machine, now, pf, index, each, timeout)
                    result.add(step)
                    s.execute(step)
            s.define_then({str(pf): new} if redefine else {}, defined, move)
        if redefine:
            result.plan.append(f"define {pf}: {new.describe()}" if new else f"undefine {pf}")
            result.changed = True
        final = new if redefine else old
        if s.check_mode:
            result.after = {**result.before, "numvfs": count,
                            "vf_driver": driver if count else None,
                            "vfs": {i: result.before["vfs"].get(i, {}) | v
                                    for i, v in settings.items()},
                            "definition": final.describe() if final else None}
        else:
            result.after = _view(s, discovery.scan_related(s.machine.sysfs, (pf,)), pf, settings,
                                 final)
        return result
    return s.run(work)


def _view(s: Session, host: Host, pf: PciAddress, settings: dict[int, dict[str, Any]],
          definition: Any) -> dict[str, Any]:
    device = sriov.require_pf(host, pf)
    vfs = [host.get(a) for a in device.sriov.vfs] if device.sriov else []
    drivers = sorted({vf.driver or "none" for vf in vfs if vf is not None})
    configs = vfinfo.read(s.machine, str(pf), device.netdevs[0] if device.netdevs else None)
    return {"numvfs": len(vfs),
            # "host" as the module says it: the VFs' own driver
            "vf_driver": None if not vfs else ("vfio-pci" if drivers == ["vfio-pci"] else
                                               "host" if "vfio-pci" not in drivers else
                                               ", ".join(drivers)),
            "vfs": {i: {k: configs[i].get(k) for k in settings[i]}
                    for i in sorted(settings) if i < len(configs)},
            "definition": definition.describe() if definition else None}
