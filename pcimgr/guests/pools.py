"""SR-IOV pools (issue 17): a PF's VFs behind a libvirt hostdev network of the pool's name.
The record (CONFIG_DIR/pools/NAME.json) says what pcimgr made; libvirt says who holds
what. Plans to take a VF from a pool into a guest (alone, or as the transient member of a
virtio failover pair), to give it back, and to unplug and replug the transient VFs around
a live migration."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from pcimgr.core import ifnames, pool_xml
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, NotFound, Refused
from pcimgr.core.hostdev_xml import to_string
from pcimgr.guests.holdings import Holdings
from pcimgr.guests.steps import AttachDevice, DetachDevice
from pcimgr.host.libvirt_adapter import Domain, Libvirt
from pcimgr.host.sysfs import Sysfs
from pcimgr.plans import filechange, statefile
from pcimgr.plans import transaction as plans
from pcimgr.plans.runner import Proposal
from pcimgr.plans.step import Step

FIX = "remove it and define the pool again (`pcimgr pool define`)"


@dataclass(frozen=True)
class PoolRecord:
    name: str
    pf: str
    vfs: int
    vf_driver: str
    vlan: int | None
    trust: bool | None
    spoofchk: bool | None
    uri: str


def path(cfg: str, name: str) -> str:
    return os.path.join(cfg, "pools", f"{name}.json")


def _shape(data: Any) -> PoolRecord:
    statefile.obj(data, name=str, pf=str, vfs=int, vf_driver=str, vlan=(int, type(None)),
                  trust=(bool, type(None)), spoofchk=(bool, type(None)), uri=str)
    PciAddress.parse(data["pf"])
    return PoolRecord(**{k: data[k] for k in PoolRecord.__dataclass_fields__})


def load(cfg: str, name: str, view: dict[str, str | None] | None = None) -> PoolRecord | None:
    """As it was before a change a kill cut short (plans/filechange.py)."""
    pool_xml.check_name(name)
    return filechange.load(cfg, path(cfg, name), _shape, FIX, view)


def require(cfg: str, name: str) -> PoolRecord:
    record = load(cfg, name)
    if record is None:
        raise NotFound(f"no pool {name!r}; `pcimgr pool list` shows the pools there are, "
                       "`pcimgr pool define NAME --pf ADDR` makes one")
    return record


def load_all(cfg: str) -> list[PoolRecord]:
    found = []
    view = filechange.as_before(cfg)
    for file in filechange.names(cfg, "pools", view):
        if file.endswith(".json"):
            record = load(cfg, file[:-5], view)
            if record is not None:
                found.append(record)
    return sorted(found, key=lambda r: r.name)


def text(record: PoolRecord) -> str:
    """The record's file, as definitions.save_all writes it with the PF's definition."""
    return statefile.dumps(asdict(record))


@dataclass(frozen=True)
class PoolView:
    record: PoolRecord
    defined: bool                       # libvirt has the network
    active: bool
    autostart: bool
    vfs: tuple[PciAddress, ...]         # what the network hands out
    holders: dict[str, str]             # VF address -> the domain that has it now
    users: tuple[str, ...]              # every domain with an interface from the pool

    @property
    def free(self) -> int:
        """VFs left for one more guest: each domain with an interface from the pool takes
        one when it starts, running or not; a VF held directly counts too."""
        direct = [d for vf, d in self.holders.items() if d not in self.users]
        return max(0, len(self.vfs) - len(self.users) - len(direct))


def view(lv: Libvirt, holdings: Holdings, domains: list[Domain], record: PoolRecord,
         sysfs: Sysfs) -> PoolView:
    """The pool's VFs are its PF's first record.vfs, as the host has them now."""
    from pcimgr.host import discovery
    pf = discovery.read_device(sysfs, PciAddress.parse(record.pf))
    vfs = pf.sriov.vfs[:record.vfs] if pf is not None and pf.sriov is not None else ()
    xml = lv.network_xml(record.name)
    active, autostart = lv.network_state(record.name) if xml is not None else (False, False)
    holders = {vf: owner for owner, vf in lv.network_ports(record.name) if vf}
    for vf in vfs:  # given directly (pcimgr assign VF, by hand): the domain XML says so
        for holding in holdings.get(vf, []):
            holders.setdefault(str(vf), holding.domain)
    users = tuple(sorted({d.name for d in domains for xml_ in (d.live_xml, d.config_xml)
                          for i in pool_xml.interfaces(xml_) if i.network == record.name}))
    return PoolView(record, xml is not None, active, autostart, vfs,
                    {str(k): v for k, v in holders.items()}, users)


def live_config(domain: Domain, live: bool | None, config: bool | None) -> tuple[bool, bool]:
    """Where an attach goes: by default the running guest if it runs and the persistent
    configuration if it has one; what cannot be is bad input."""
    live = domain.active if live is None else live
    config = domain.persistent if config is None else config
    if live and not domain.active:
        raise BadInput(f"{domain.name} is not running, so there is no live guest to attach to; "
                       "drop --live (the persistent configuration is changed by default)")
    if config and not domain.persistent:
        raise BadInput(f"{domain.name} is transient (it has no persistent configuration); "
                       "drop --config")
    if not (live or config):
        raise BadInput("neither --live nor --config: nothing would be attached")
    return live, config


def require_free(pool: PoolView, domain: str) -> None:
    """Exhaustion before the guest starts, with who has the VFs."""
    if not pool.defined:
        raise Refused(f"refusing: libvirt has no network {pool.record.name} (the pool's); "
                      f"`pcimgr pool define {pool.record.name} --pf {pool.record.pf} ...` "
                      "makes it again")
    if domain in pool.users:
        raise Refused(f"refusing: {domain} already has an interface from pool "
                      f"{pool.record.name}; `pcimgr release --pool {pool.record.name} "
                      f"{domain}` first")
    if pool.free <= 0:
        takers = sorted({*pool.users, *pool.holders.values()})
        raise Refused(f"refusing: pool {pool.record.name} has 0 free VFs: {len(pool.vfs)} "
                      f"held by {', '.join(takers) or 'nobody'}; release one, or define the "
                      "pool with more --vfs")


@dataclass(frozen=True)
class Failover:
    """The virtio member of a teaming pair: on a host bridge or a libvirt network."""

    bridge: str | None
    network: str | None


def failover(sysfs: Sysfs, lv: Libvirt, bridge: str | None,
             network: str | None) -> Failover:
    """Checked before anything is asked of libvirt: the bridge is one on this host, the
    network one libvirt has."""
    if bool(bridge) == bool(network):
        raise BadInput("--failover teams the VF with a virtio interface on a bridge or a "
                       "network: give one of --bridge BR or --network NET")
    if bridge:
        ifnames.check(bridge, "--bridge")
        if not sysfs.exists(f"class/net/{bridge}/bridge"):
            raise BadInput(f"no bridge {bridge} on this host (/sys/class/net/{bridge}/bridge); "
                           "give an existing one (`ip -br link show type bridge`)")
    elif lv.network_xml(network or "") is None:
        raise BadInput(f"libvirt has no network {network!r}; `virsh net-list --all` shows "
                       "the networks there are")
    return Failover(bridge, network)


def plan_assign(lv: Libvirt, pool: PoolView, vm: str, mac: str | None, vlan: int | None,
                live: bool | None, config: bool | None, failover: Failover | None) -> Proposal:
    domain = lv.domain(vm)
    live, config = live_config(domain, live, config)
    require_free(pool, domain.name)
    mac = (mac or pool_xml.guest_mac(domain.uuid, pool.record.name,
                                     domain.config_xml or domain.live_xml or "")).lower()
    vlan = vlan if vlan is not None else pool.record.vlan
    steps: list[Step] = []
    command = f"assign --pool {pool.record.name} {domain.name}"
    if failover is not None:
        steps.append(_attach(lv, pool.record.pf, domain, pool_xml.failover_virtio(
            mac, failover.bridge, failover.network), mac, live, config))
        command += " --failover"
    steps.append(_attach(lv, pool.record.pf, domain, pool_xml.from_pool(
        pool.record.name, mac, vlan if vlan != pool.record.vlan else None,
        pool_xml.alias_for(mac) if failover else None), mac, live, config))
    return Proposal(plans.Plan(command, tuple(steps)), None, ())


def _attach(lv: Libvirt, address: str, domain: Domain, element: Any, mac: str, live: bool,
            config: bool) -> AttachDevice:
    return AttachDevice(address, lv.uri, domain.name, domain.uuid, to_string(element), live,
                        config, mac=mac)


def detach_interface(lv: Libvirt, address: str, domain: Domain,
                     iface: pool_xml.GuestInterface, live: bool, config: bool,
                     timeout: float) -> DetachDevice:
    xml = to_string(iface.element)
    return DetachDevice(address, lv.uri, domain.name, domain.uuid, xml if live else None,
                        xml if config else None, timeout, mac=iface.mac)


def plan_release(lv: Libvirt, record: PoolRecord, vm: str, timeout: float) -> Proposal:
    """Every interface the domain has from the pool, and the virtio member each one is
    teamed with; live and persistent, wherever they are."""
    domain = lv.domain(vm)
    live = pool_xml.interfaces(domain.live_xml)
    config = pool_xml.interfaces(domain.config_xml)
    taken = {i.mac: i for i in live + config if i.network == record.name}
    if not taken:
        raise NotFound(f"{domain.name} has no interface from pool {record.name}")
    partners = {i.teamed_with for i in taken.values() if i.teamed_with}
    pairs = {i.mac: i for i in live + config if i.alias in partners}
    steps: list[Step] = []
    # the transient member first: the guest keeps its network on virtio until the end
    for mac, iface in [*taken.items(), *pairs.items()]:
        in_live = any(i.mac == mac for i in live)
        in_config = any(i.mac == mac for i in config)
        steps.append(detach_interface(lv, record.pf, domain, iface, in_live, in_config, timeout))
    return Proposal(plans.Plan(f"release --pool {record.name} {domain.name}", tuple(steps)),
                    None, ())


def plan_migrate_prep(lv: Libvirt, records: dict[str, PoolRecord], vm: str,
                      timeout: float) -> Proposal:
    """Unplug every transient (VF) member of the running guest's teaming pairs, live only:
    the guest's failover driver carries on over virtio, QEMU can migrate, and the
    persistent configuration still names the VF for migrate-finish."""
    domain = lv.domain(vm)
    if not domain.active:
        raise BadInput(f"{domain.name} is not running: nothing to unplug before a migration")
    transient = [i for i in pool_xml.interfaces(domain.live_xml) if i.teaming == "transient"]
    if not transient:
        raise NotFound(f"{domain.name} has no failover pair (an <interface> with <teaming "
                       "type='transient'>); `pcimgr assign --pool NAME VM --failover` makes "
                       "one")
    steps: list[Step] = [detach_interface(lv, _address(i, records), domain, i, True, False, timeout)
                         for i in transient]
    return Proposal(plans.Plan(f"migrate-prep {domain.name}", tuple(steps)), None, ())


def plan_migrate_finish(lv: Libvirt, pools: dict[str, PoolView], vm: str) -> Proposal:
    """Plug back, live, the transient members the persistent configuration names and the
    running guest lacks: from the same-named pool on this host, same MAC and VLAN."""
    domain = lv.domain(vm)
    if not domain.active:
        raise BadInput(f"{domain.name} is not running here: start or migrate it first")
    running = {i.mac for i in pool_xml.interfaces(domain.live_xml)}
    missing = [i for i in pool_xml.interfaces(domain.config_xml)
               if i.teaming == "transient" and i.mac not in running]
    if not missing:
        raise NotFound(f"{domain.name} lacks no VF of a failover pair")
    steps: list[Step] = []
    for iface in missing:
        if iface.network is not None:
            pool = pools.get(iface.network)
            if pool is None:
                raise NotFound(f"no pool {iface.network!r} on this host: define it with "
                               f"`pcimgr pool define {iface.network} --pf ADDR` first (the "
                               "destination needs a pool of the same name)")
            if pool.free + (1 if domain.name in pool.users else 0) <= 0:
                raise Refused(f"refusing: pool {iface.network} has 0 free VFs on this host")
        records = {name: view.record for name, view in pools.items()}
        steps.append(_attach(lv, _address(iface, records), domain, iface.element, iface.mac,
                             True, False))
    return Proposal(plans.Plan(f"migrate-finish {domain.name}", tuple(steps)), None, ())


def _address(iface: pool_xml.GuestInterface, records: dict[str, PoolRecord]) -> str:
    """The function a step names (journals name one): a hostdev member's VF, or the PF of
    the pool a network member comes from."""
    a = iface.element.find("./source/address")
    if a is not None:
        return str(PciAddress(int(a.get("domain", "0"), 0), int(a.get("bus", "0"), 0),
                              int(a.get("slot", "0"), 0), int(a.get("function", "0"), 0)))
    record = records.get(iface.network or "")
    if record is None:
        raise NotFound(f"interface {iface.mac} comes from network {iface.network!r}, which is "
                       "no pcimgr pool here")
    return record.pf
