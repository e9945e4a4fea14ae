"""`pcimgr pool define/undefine` (issue 17): a PF's VFs created (and kept across reboots
by a definition, as `define PF --vfs N` does) and a persistent, autostarted libvirt
hostdev network of the pool's name listing them, in one transaction; and the way back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from pcimgr.core import pool_xml
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, Refused
from pcimgr.core.hostdev_xml import to_string
from pcimgr.core.model import Host
from pcimgr.guests.holdings import Holdings
from pcimgr.guests.network_steps import DefineNetwork, UndefineNetwork
from pcimgr.guests.pools import PoolRecord, PoolView
from pcimgr.host.libvirt_adapter import Libvirt
from pcimgr.host.machine import Machine
from pcimgr.host.usage import Survey
from pcimgr.persist.definitions import Definition, identify
from pcimgr.plans import transaction as plans
from pcimgr.plans.runner import Proposal
from pcimgr.plans.step import Step
from pcimgr.sriov import planner as sriov
from pcimgr.sriov.steps import ConfigureVf

# what a new VF has before anyone sets it (the kernel's and the PF drivers' default)
NEW_VF = {"trust": False, "spoofchk": True}


def plan_define(machine: Machine, host: Host, survey: Survey, lv: Libvirt,
                holdings: Holdings, record: PoolRecord, timeout: float,
                force: bool) -> Proposal:
    """The VFs (created unless the PF has that many already, on the pool's driver), their
    trust and spoof checking, then the network. Refused as `vfs create` refuses (a PF the
    host uses, VFs in use) and when libvirt has a network of that name that is no pool."""
    pf_address = PciAddress.parse(record.pf)
    pf = sriov.require_pf(host, pf_address)
    assert pf.sriov is not None
    existing = lv.network_xml(record.name)
    if existing is not None and _forward_mode(existing) != "hostdev":
        raise Refused(f"refusing: libvirt has a network {record.name} already, and it is no "
                      "hostdev network (not a pool); choose another name")
    create = sriov.plan_create(machine, host, survey, pf_address, record.vfs, record.vf_driver,
                               False, timeout, force, holdings)
    steps: list[Step] = list(create.plan.steps)
    settings = {k: v for k, v in (("trust", record.trust), ("spoofchk", record.spoofchk))
                if v is not None}
    if settings:
        if not pf.netdevs:
            raise Refused(f"refusing: VF trust and spoof checking are set through the PF's "
                          f"interface, and {record.pf} has none")
        fresh = pf.sriov.numvfs != record.vfs
        for index in range(record.vfs):
            # VFs made by this plan start as NEW_VF; existing ones are read by `vfs set`'s plan
            if fresh:
                changed = {k: v for k, v in settings.items() if NEW_VF[k] != v}
                if changed:
                    steps.append(ConfigureVf(record.pf, pf.netdevs[0], index, changed,
                                             {k: NEW_VF[k] for k in changed}, timeout))
            else:
                steps += sriov.plan_set(machine, host, pf_address, index, settings,
                                        timeout).plan.steps
    notes = create.notes
    vfs = [PciAddress.parse(a) for a in sriov.vf_addresses(pf, record.vfs)]
    pf_dev = pf.netdevs[0] if pf.netdevs else None
    xml = to_string(pool_xml.network(record.name, pf_dev, vfs, record.vlan))
    if existing is None or _vlan(existing) != record.vlan or (
            pool_xml.network_pf(existing) != pf_dev if pf_dev
            else pool_xml.network_vfs(existing) != vfs):
        # libvirt's host must be the one whose VFs these are for it to start the network
        start = machine.asks_libvirt_by_default
        steps.append(DefineNetwork(record.pf, lv.uri, record.name, xml, existing, start=start))
        if not start:
            notes = (*notes, f"{machine.kind}: libvirt's host has none of its VFs, so the "
                     f"network {record.name} is defined and set to autostart, not started")
    return Proposal(plans.Plan(f"pool define {record.name}", tuple(steps)), create.module,
                    notes)


def _vlan(network_xml: str) -> int | None:
    tag = ET.fromstring(network_xml).find("./vlan/tag")
    return int(tag.get("id", "0")) if tag is not None else None


def _forward_mode(network_xml: str) -> str | None:
    forward = ET.fromstring(network_xml).find("./forward")
    return None if forward is None else forward.get("mode")


def definition(host: Host, record: PoolRecord) -> Definition:
    """What the pool keeps across reboots: the PF's VF count and driver, and each VF's
    trust and spoof checking (the network itself is libvirt's, autostarted)."""
    pf = host.require(PciAddress.parse(record.pf))
    settings: dict[str, Any] = {k: v for k, v in (("trust", record.trust),
                                                  ("spoofchk", record.spoofchk))
                                if v is not None}
    return identify(host, pf, vfs=record.vfs, vf_driver=record.vf_driver,
                    vf={str(i): dict(settings) for i in range(record.vfs)} if settings else {})


def plan_undefine(lv: Libvirt, pool: PoolView) -> Proposal:
    """The network goes; refused while a guest has an interface from the pool. The VFs
    stay (their definition goes with the pool: they are not made again at boot)."""
    if pool.users:
        raise Refused(f"refusing: {', '.join(pool.users)} still take VFs from pool "
                      f"{pool.record.name}; `pcimgr release --pool {pool.record.name} VM` "
                      "first")
    xml = lv.network_xml(pool.record.name)
    steps: list[Step] = []
    if xml is not None:
        steps.append(UndefineNetwork(pool.record.pf, lv.uri, pool.record.name, xml,
                                     active=pool.active))
    return Proposal(plans.Plan(f"pool undefine {pool.record.name}", tuple(steps)), None, ())


def check_record(name: str, pf: str, vfs: int | None, vf_driver: str, vlan: int | None,
                 trust: bool | None, spoofchk: bool | None, uri: str,
                 host: Host) -> PoolRecord:
    pool_xml.check_name(name)
    device = host.require(PciAddress.parse(pf))
    if device.sriov is None:
        raise BadInput(f"{pf} has no SR-IOV capability: a pool needs a PF")
    count = vfs if vfs is not None else (device.sriov.numvfs or device.sriov.totalvfs)
    return PoolRecord(name, str(device.address), count, vf_driver, vlan, trust, spoofchk, uri)
