"""Plans for `pcimgr assign` (host driver -> vfio-pci -> guest) and `pcimgr release` (back).

pcimgr owns the host side by default (managed='no' in the XML): it detaches the
function, and with --group its group mates, through the host-driver plans,
remembers their original drivers, and gives them back on release. Each
assignment leaves a record (STATE_DIR/assignments/<address>.json) naming the
domain and the functions moved with it; release also scans every domain, so
a device attached by hand or by another tool is found as well.
"""

from __future__ import annotations

import os

from pcimgr.core import hostdev_xml, pool_xml
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, Refused
from pcimgr.core.model import Host, PciDevice
from pcimgr.core.readiness import VFIO_PCI, readiness, vfio_name
from pcimgr.drivers import planner as drivers
from pcimgr.drivers import reset as resets
from pcimgr.guests import numa
from pcimgr.guests.holdings import Holdings
from pcimgr.guests.pools import Failover, detach_interface, live_config
from pcimgr.guests.steps import AttachDevice, DetachDevice
from pcimgr.host import discovery, topology, vfinfo, vgpus
from pcimgr.host.libvirt_adapter import Libvirt
from pcimgr.host.machine import Machine
from pcimgr.host.usage import Survey
from pcimgr.plans import transaction as plans
from pcimgr.plans.runner import Proposal
from pcimgr.plans.step import Step


def record_path(state: str, address: str) -> str:
    """state "": the path relative to the state directory, as Proposal.records wants it."""
    return os.path.join(state, "assignments", f"{address}.json")


def plan_assign(machine: Machine, host: Host, survey: Survey, lv: Libvirt, holdings: Holdings,
                address: PciAddress, vm: str, live: bool | None, config: bool | None,
                group: bool, managed: bool, mac: str | None, vlan: int | None,
                force: bool, failover: Failover | None = None) -> Proposal:
    """failover: the VF as the transient member of a virtio teaming pair (issue 17)."""
    device = host.require(address)
    domain = lv.domain(vm)
    live, config = live_config(domain, live, config)
    if (mac or vlan or failover) and (device.physfn is None or device.base_class != 0x02):
        raise BadInput(f"--mac and --vlan give a NIC's SR-IOV VF to the guest as "
                       f"<interface type='hostdev'>, and {address} is not a VF of a NIC; "
                       "assign it without them")
    model, managed, said, driver = _variant(machine, lv, device, managed)
    detach = drivers.plan_detach(machine, host, survey, (address,), driver, group, force,
                                 driver_hint=False)  # assign has no --driver
    moving = [PciAddress.parse(s.address) for s in detach.plan.steps]
    for a in sorted({address, *moving}):
        held = holdings.get(a, [])
        if held:
            raise Refused(f"refusing: {a} is already assigned to "
                          + ", ".join(f"{h.domain} ({h.where})" for h in held)
                          + f"; `pcimgr release {a}` first")
    # VFIO gives a whole group to one guest: a mate in another domain rules it out
    group_of = host.groups.get(device.iommu_group) if device.iommu_group is not None else None
    for mate in (group_of.members if group_of else ()):
        others = [h for h in holdings.get(mate.address, []) if h.uuid != domain.uuid]
        if others:
            raise Refused(f"refusing: {address} shares IOMMU group {device.iommu_group} with "
                          f"{mate.address}, which "
                          + ", ".join(f"{h.domain} ({h.where})" for h in others)
                          + " has, and a group can go to one guest only; "
                          f"`pcimgr release {mate.address}` first")
    def held_by(a: PciAddress) -> list[str]:
        return [h.domain for h in holdings.get(a, []) if h.uuid != domain.uuid]
    # a reset between guests that would hit the host's or another guest's functions
    ours = {address, *moving, *(m.address for m in (group_of.members if group_of else ()))}
    notes = resets.assign_notes(topology.neighbourhood(machine.sysfs, address), address,
                                survey, held_by, ours, force)
    notes += numa.warnings(machine.sysfs, device, domain.name,
                           domain.live_xml or domain.config_xml or "")
    partner: list[Step] = []
    if failover is not None:
        mac = (mac or pool_xml.guest_mac(domain.uuid, str(address),
                                          domain.config_xml or domain.live_xml or "")).lower()
        virtio = pool_xml.failover_virtio(mac, failover.bridge, failover.network)
        partner.append(AttachDevice(str(address), lv.uri, domain.name, domain.uuid,
                                    hostdev_xml.to_string(virtio), live, config, mac=mac))
        element = pool_xml.teamed_vf(address, mac, vlan, pool_xml.alias_for(mac), managed)
    elif mac or vlan:
        element = hostdev_xml.interface(address, managed, mac, vlan, model)
    else:
        element = hostdev_xml.hostdev(address, managed, model)
    attach = AttachDevice(str(address), lv.uri, domain.name, domain.uuid,
                          hostdev_xml.to_string(element), live, config)
    notes += detach.notes + said
    if mac or vlan:
        notes += _pf_link_warning(machine, device.physfn)
    steps: list[Step] = [] if managed else list(detach.plan.steps)
    steps += partner  # the virtio member first: the alias the VF's <teaming> names
    steps.append(attach)
    # the functions pcimgr moves, and so gives back on release (one already on
    # vfio-pci, e.g. a VF created for guests, stays there)
    record = {"domain": domain.name, "uuid": domain.uuid, "uri": lv.uri, "managed": managed,
              "moved": [] if managed else [str(a) for a in moving]}
    return Proposal(plans.Plan(f"assign {address} {domain.name}", tuple(steps)),
                    None if managed else detach.module, tuple(notes),
                    ((record_path("", str(address)), record),))


def _variant(machine: Machine, lv: Libvirt, device: PciDevice, managed: bool) -> tuple[
        str | None, bool, tuple[str, ...], str | None]:
    """The XML's <driver model=...>, managed, what to tell, and the driver to bind (None: the
    best the kernel offers). A VFIO variant driver is named so that libvirt (>= 10.0) binds
    that one when it manages the function; a vendor's VFIO provider (NVIDIA vGPU VFs on
    nvidia) is never handed to libvirt to rebind."""
    now = readiness(device)
    if now.kind == "vendor":
        vgpu = vgpus.read(machine.sysfs, str(device.address))
        if vgpu is not None and not vgpu.current:
            raise Refused(f"refusing: {device.address} has no vGPU type yet, so a guest would "
                          f"get nothing; `pcimgr vgpu set {device.address} TYPE` first "
                          "(`pcimgr vgpu list` shows what it can take)")
        said = (f"{device.address} is ready on {now.driver}, its vendor's VFIO provider: "
                "given as managed='no' (libvirt would rebind it to vfio-pci)",) if managed \
            else ()
        return None, False, said, None
    end = now.driver if now.kind else drivers.targets_of(machine, [device], None)[
        device.address]
    if end is None or not vfio_name(end) or end == VFIO_PCI:
        return None, managed, (), None
    version = tuple(int(p) for p in lv.version().split("."))
    if version >= (10, 0, 0):
        return end, managed, (), None
    old = f"libvirt {lv.version()} predates VFIO variant drivers (<driver model=...>, 10.0)"
    if managed:
        return None, managed, (f"{device.address} ends on the VFIO variant {end}, and {old}: "
                               "with managed='yes' libvirt binds vfio-pci instead",), None
    # libvirt < 10.0 starts a guest with an unmanaged device only on one of its stub drivers
    # (the lab: "Unmanaged PCI device ... must be manually detached from the host")
    if now.kind == "variant":
        raise Refused(f"refusing: {device.address} is on the VFIO variant {end}, and {old}: "
                      "it starts a guest with an unmanaged device only on vfio-pci; "
                      f"`pcimgr detach {device.address} --driver vfio-pci` first, or assign "
                      "it with libvirt >= 10.0")
    return None, managed, (f"{device.address}: binding vfio-pci, not its VFIO variant {end}: "
                           f"{old} and starts a guest with an unmanaged device only on "
                           "vfio-pci",), VFIO_PCI


def _pf_link_warning(machine: Machine, pf: PciAddress | None) -> list[str]:
    """libvirt sets an <interface type='hostdev'>'s MAC/VLAN through the PF when the guest
    starts, and refuses to start it while the PF is down (seen in the lab)."""
    device = discovery.read_device(machine.sysfs, pf) if pf is not None else None
    if device is None or not device.netdevs:
        return []
    netdev = device.netdevs[0]
    if vfinfo.link_is_up(machine.sysfs, str(pf), netdev):
        return []
    return [f"warning: {netdev}, the PF, is down: libvirt will refuse to start the guest "
            f"with this interface until it is up (`ip link set {netdev} up`)"]


def plan_release(machine: Machine, host: Host, lv: Libvirt, holdings: Holdings,
                 address: PciAddress, assignment: dict | None, originals: dict[str, dict],
                 keep_detached: bool, timeout: float) -> Proposal:
    host.require(address)
    steps: list[Step] = []
    notes: list[str] = []
    for h in holdings.get(address, []):
        live = h.live_xml if h.running else None
        if live is None and h.config_xml is None:
            continue
        steps.append(DetachDevice(str(address), lv.uri, h.domain, h.uuid, live, h.config_xml,
                                  timeout))
        steps += _failover_partners(lv, address, h.uuid, live, h.config_xml, timeout)
    if not steps:
        notes.append(f"no domain on {lv.uri} holds {address}")
    if not keep_detached:
        # what the assignment moved; without a record (attached by hand or by another
        # tool), the function itself
        functions = ([PciAddress.parse(a) for a in assignment["moved"]] if assignment
                     else [address])
        targets = []
        for a in functions:
            others = [h.domain for h in holdings.get(a, [])] if a != address else []
            if others:
                notes.append(f"{a} stays on its driver: {', '.join(others)} holds it")
            else:
                targets.append(a)
        rebind = drivers.plan_rebind(machine, host, tuple(targets), originals)
        steps += rebind.plan.steps
        notes += rebind.notes
    return Proposal(plans.Plan(f"release {address}", tuple(steps)), None, tuple(notes),
                    ((record_path("", str(address)), None),))


def _failover_partners(lv: Libvirt, address: PciAddress, uuid: str, live_xml: str | None,
                       config_xml: str | None, timeout: float) -> list[Step]:
    """The virtio member of the VF's teaming pair goes with it (after it)."""
    import xml.etree.ElementTree as ET
    aliases = set()
    for xml in (live_xml, config_xml):
        if xml:
            teaming = ET.fromstring(xml).find("./teaming")
            if teaming is not None and teaming.get("persistent"):
                aliases.add(teaming.get("persistent"))
    if not aliases:
        return []
    domain = lv.domain(uuid)
    live = pool_xml.interfaces(domain.live_xml)
    config = pool_xml.interfaces(domain.config_xml)
    steps: list[Step] = []
    for iface in {i.mac: i for i in live + config if i.alias in aliases}.values():
        steps.append(detach_interface(lv, str(address), domain, iface,
                                      any(i.mac == iface.mac for i in live),
                                      any(i.mac == iface.mac for i in config), timeout))
    return steps
