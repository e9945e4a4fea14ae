"""A function (or its IOMMU group) on vfio-pci, pci-stub or back on its host driver,
optionally kept across reboots by a definition: the pcimgr_device module.

Every check runs before the first write: the plan's refusals, and with persistent the
definition's (which never forces: it is applied at every boot). The definitions and the
move are one change: written first, put back if the move fails (Session.define_then).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pcimgr.cli import rules
from pcimgr.core.address import PciAddress
from pcimgr.core.model import Host
from pcimgr.drivers import planner as drivers
from pcimgr.drivers.binding import BindDriver, Reprobe
from pcimgr.fleet.session import Result, Session
from pcimgr.persist import definitions
from pcimgr.persist import planner as persist
from pcimgr.persist.definitions import Definition

HOST = "host"  # give it back to the driver it had before pcimgr moved it


def ensure(s: Session, address: PciAddress, driver: str, group: bool, persistent: bool,
           force: bool, timeout: float = 30.0) -> Result:
    timeout = rules.checked(rules.TIMEOUT, timeout, "timeout")

    def work() -> Result:
        host, survey = s.scan((address,))
        targets = _targets(host, address, group)
        defined = {d.address: d for d in definitions.load_all(s.config_dir)[0]}
        result = Result(before=_view(host, targets, defined))
        if driver == HOST:
            proposal = drivers.plan_rebind(s.machine, host, targets,
                                              drivers.load_records(s.state, targets))
        else:
            proposal = drivers.plan_detach(s.machine, host, survey, (address,), driver,
                                              group, force)
        saves: list[Definition] = []
        drops: list[str] = []
        if persistent and driver == HOST:
            drops = [str(a) for a in targets if str(a) in defined
                     and defined[str(a)].driver is not None]
        elif persistent:
            d = persist.define(host, defined.get(str(address)), address, driver, None, None,
                               None, {})
            new = persist.with_group(host, d, defined) if group else [d]
            persist.check(s.machine, host, survey, new, defined, timeout)
            saves = [n for n in new if n.address not in defined
                     or asdict(defined[n.address]) != asdict(n)]
        result.add(proposal)
        result.plan += [f"define {d.address}: {d.describe()}" for d in saves]
        result.plan += [f"undefine {a}" for a in drops]
        result.changed = result.changed or bool(saves or drops)
        now = defined | {d.address: d for d in saves}
        for a in drops:
            del now[a]
        if not s.check_mode:
            changes: dict[str, Definition | None] = {d.address: d for d in saves}
            s.define_then(changes | dict.fromkeys(drops), defined,
                          lambda: s.execute(proposal))
            host, _ = s.scan(targets)
            result.after = _view(host, targets, now)
        else:
            moved = {st.address: st.target for st in proposal.plan.steps
                     if isinstance(st, (BindDriver, Reprobe))}
            result.after = {a: v | {"driver": moved.get(a, v["driver"]),
                                    "definition": now[a].describe() if a in now else None}
                            for a, v in result.before.items()}
        return result
    return s.run(work)


def _targets(host: Host, address: PciAddress, group: bool) -> tuple[PciAddress, ...]:
    device = host.require(address)
    if not group or device.iommu_group is None:
        return (address,)
    mates = [m.address for m in host.groups[device.iommu_group].members if not m.is_bridge]
    return tuple(sorted(set(mates) | {address}))


def _view(host: Host, targets: tuple[PciAddress, ...],
          defined: dict[str, Definition]) -> dict[str, Any]:
    view = {}
    for a in targets:
        d = host.get(a)
        view[str(a)] = {"driver": d.driver if d else None,
                        "definition": defined[str(a)].describe() if str(a) in defined else None}
    return view
