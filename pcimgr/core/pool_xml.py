"""libvirt XML for SR-IOV pools (issue 17): a hostdev <network> whose VFs libvirt hands to
guests as they start, the <interface type='network'> a guest takes one through, and the
virtio + VF <teaming> pair that keeps a guest's network while its VF is unplugged for a
migration (libvirt's formatdomain "Teaming a virtio/hostdev NIC pair"). Built as elements;
no I/O."""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput
from pcimgr.core.hostdev_xml import address_element

# libvirt's network names: no '/', and pcimgr's own rule for a name that is also a file name
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadInput(f"not a pool name: {name!r}; use 1-64 letters, digits, '.', '_' or "
                       "'-', starting with a letter or digit")
    return name


def guest_mac(domain_uuid: str, what: str, domain_xml: str) -> str:
    """A MAC in QEMU's 52:54:00 range, as libvirt makes them, but derived, not drawn: from
    the domain, what is given to it and how many interfaces it has already, so that the
    dry run shows the MAC the run uses and a repeated run makes the same one."""
    seed = f"{domain_uuid}\0{what}\0{domain_xml.count('<interface')}".encode()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in hashlib.sha256(seed).digest()[:3])


def network(name: str, pf_dev: str | None, vfs: list[PciAddress],
            vlan: int | None) -> ET.Element:
    """<network><forward mode='hostdev' managed='yes'>: libvirt gives a free VF to each guest
    interface of this network as the guest starts. By the PF's interface when it has one
    (libvirt finds its VFs when the network starts, as the pool's VF count changes), else
    by each VF's address (libvirt checks those are VFs of its host when it defines it)."""
    element = ET.Element("network")
    ET.SubElement(element, "name").text = name
    forward = ET.SubElement(element, "forward", {"mode": "hostdev", "managed": "yes"})
    if pf_dev:
        ET.SubElement(forward, "pf", {"dev": pf_dev})
    else:
        for vf in vfs:
            a = address_element(vf)
            a.set("type", "pci")
            forward.append(a)
    if vlan:
        ET.SubElement(ET.SubElement(element, "vlan"), "tag", {"id": str(vlan)})
    return element


def network_pf(network_xml: str) -> str | None:
    try:
        pf = ET.fromstring(network_xml).find("./forward/pf")
    except ET.ParseError:
        return None
    return None if pf is None else pf.get("dev")


def network_vfs(network_xml: str) -> list[PciAddress]:
    try:
        root = ET.fromstring(network_xml)
    except ET.ParseError:
        return []
    found = []
    for a in root.findall("./forward/address"):
        try:
            found.append(PciAddress(int(a.get("domain", "0"), 0), int(a.get("bus", "0"), 0),
                                    int(a.get("slot", "0"), 0), int(a.get("function", "0"), 0)))
        except (TypeError, ValueError):
            continue
    return found


def from_pool(pool: str, mac: str, vlan: int | None,
              transient_of: str | None = None) -> ET.Element:
    """<interface type='network'> taking a VF from the pool; transient_of: the alias of the
    virtio interface it is teamed with."""
    element = ET.Element("interface", {"type": "network"})
    ET.SubElement(element, "mac", {"address": mac})
    ET.SubElement(element, "source", {"network": pool})
    if vlan:
        ET.SubElement(ET.SubElement(element, "vlan"), "tag", {"id": str(vlan)})
    if transient_of:
        ET.SubElement(element, "teaming", {"type": "transient", "persistent": transient_of})
    return element


def teamed_vf(vf: PciAddress, mac: str, vlan: int | None, persistent: str,
              managed: bool = True) -> ET.Element:
    """A VF named by address as the transient member of a teaming pair."""
    element = ET.Element("interface", {"type": "hostdev", "managed": "yes" if managed else "no"})
    ET.SubElement(element, "mac", {"address": mac})
    source = ET.SubElement(element, "source")
    a = address_element(vf)
    a.set("type", "pci")
    source.append(a)
    if vlan:
        ET.SubElement(ET.SubElement(element, "vlan"), "tag", {"id": str(vlan)})
    ET.SubElement(element, "teaming", {"type": "transient", "persistent": persistent})
    return element


def failover_virtio(mac: str, bridge: str | None, network_name: str | None) -> ET.Element:
    """The persistent member: virtio on a bridge or a libvirt network, the same MAC, an alias
    the transient member names (libvirt wants user aliases to start with "ua-")."""
    if bridge:
        element = ET.Element("interface", {"type": "bridge"})
    else:
        element = ET.Element("interface", {"type": "network"})
    ET.SubElement(element, "mac", {"address": mac})
    if bridge:
        ET.SubElement(element, "source", {"bridge": bridge})
    else:
        ET.SubElement(element, "source", {"network": network_name or ""})
    ET.SubElement(element, "model", {"type": "virtio"})
    ET.SubElement(element, "teaming", {"type": "persistent"})
    ET.SubElement(element, "alias", {"name": alias_for(mac)})
    return element


def alias_for(mac: str) -> str:
    return "ua-pcimgr-" + mac.replace(":", "")


@dataclass(frozen=True)
class GuestInterface:
    """One <interface> of a domain, as pool commands need it."""

    mac: str
    kind: str                    # the interface type
    network: str | None          # <source network>
    teaming: str | None          # "persistent" / "transient"
    teamed_with: str | None      # a transient member's persistent alias
    alias: str | None
    element: ET.Element


def interfaces(domain_xml: str | None) -> list[GuestInterface]:
    try:
        root = ET.fromstring(domain_xml or "")
    except ET.ParseError:
        return []
    found = []
    for element in root.findall("./devices/interface"):
        mac = element.find("./mac")
        source = element.find("./source")
        teaming = element.find("./teaming")
        alias = element.find("./alias")
        found.append(GuestInterface(
            (mac.get("address", "") if mac is not None else "").lower(),
            element.get("type", ""),
            source.get("network") if source is not None else None,
            teaming.get("type") if teaming is not None else None,
            teaming.get("persistent") if teaming is not None else None,
            alias.get("name") if alias is not None else None,
            element))
    return found
