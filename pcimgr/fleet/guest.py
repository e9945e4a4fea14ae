"""A function or VF assigned to, or released from, a libvirt domain: the pcimgr_guest module.

present: unless the domain already has it, `pcimgr assign` (detach to vfio-pci, attach).
absent: if the domain has it, `pcimgr release` (out of every domain that has it, then
back to its original driver unless keep_detached).
"""

from __future__ import annotations

from typing import Any

from pcimgr.cli import rules
from pcimgr.core.address import PciAddress
from pcimgr.core.model import Host
from pcimgr.drivers import planner as drivers
from pcimgr.fleet.session import Result, Session
from pcimgr.guests import assign as assigning
from pcimgr.guests.holdings import Holdings
from pcimgr.host import vfinfo
from pcimgr.plans import records


def ensure(s: Session, address: PciAddress, domain: str, present: bool, group: bool,
           managed: bool, mac: str | None, vlan: int | None, live: bool | None,
           config: bool | None, keep_detached: bool, force: bool, timeout: float) -> Result:
    # the rules of `pcimgr assign --vlan --mac --timeout`
    vlan = None if vlan is None else rules.checked(rules.VLAN, vlan, "vlan")
    mac = None if mac is None else vfinfo.check_mac(mac)
    timeout = rules.checked(rules.TIMEOUT, timeout, "timeout")

    def work() -> Result:
        host, survey = s.scan((address,))
        host.require(address)
        lv = s.context.libvirt()
        target = lv.domain(domain)
        holdings = s.context.holdings_or_fail()
        result = Result(before=_view(host, holdings, address))
        has = any(h.uuid == target.uuid for h in holdings.get(address, []))
        if has == present:
            result.after = result.before
            return result
        if present:
            proposal = assigning.plan_assign(s.machine, host, survey, lv, holdings, address,
                                             target.name, live, config, group, managed, mac,
                                             vlan, force)
        else:
            record = records.load(s.state, assigning.record_path("", str(address)))
            moved = tuple(PciAddress.parse(a) for a in (record or {}).get("moved", []))
            proposal = assigning.plan_release(
                s.machine, host, lv, holdings, address, record,
                drivers.load_records(s.state, (address, *moved)), keep_detached, timeout)
        result.add(proposal)
        s.execute(proposal)
        if s.check_mode:
            holders = set(result.before["holders"])
            holders = holders | {target.name} if present else holders - {target.name}
            result.after = result.before | {"holders": sorted(holders)}
        else:
            from pcimgr.guests import holdings as guests
            host, _ = s.scan((address,))
            result.after = _view(host, guests.scan(lv), address)
        return result
    return s.run(work)


def _view(host: Host, holdings: Holdings, address: PciAddress) -> dict[str, Any]:
    d = host.get(address)
    return {"driver": d.driver if d else None,
            "holders": sorted({h.domain for h in holdings.get(address, [])})}
