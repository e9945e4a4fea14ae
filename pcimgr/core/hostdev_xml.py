"""libvirt device XML for a PCI function, built as elements, never by string pasting."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pcimgr.core.address import PciAddress


def address_element(address: PciAddress) -> ET.Element:
    return ET.Element("address", {
        "domain": f"0x{address.domain:04x}",
        "bus": f"0x{address.bus:02x}",
        "slot": f"0x{address.slot:02x}",
        "function": f"0x{address.function:x}",
    })


def hostdev(address: PciAddress, managed: bool = True, model: str | None = None) -> ET.Element:
    """<hostdev mode='subsystem' type='pci' managed=...><source><address .../></source></hostdev>;
    model: the VFIO variant driver (<driver model=.../>, libvirt >= 10.0), so that libvirt
    binds that one, not plain vfio-pci, when it manages the function."""
    element = ET.Element("hostdev", {"mode": "subsystem", "type": "pci",
                                      "managed": "yes" if managed else "no"})
    if model:
        ET.SubElement(element, "driver", {"model": model})
    ET.SubElement(element, "source").append(address_element(address))
    return element


def to_string(element: ET.Element) -> str:
    """The one way pcimgr writes XML: two-space indents, no trailing text after the element
    (one found inside a domain's XML carries the whitespace that followed it there)."""
    element.tail = None
    ET.indent(element, space="  ")
    return ET.tostring(element, encoding="unicode")


def interface(address: PciAddress, managed: bool = True, mac: str | None = None,
              vlan: int | None = None, model: str | None = None) -> ET.Element:
    """<interface type='hostdev'>: an SR-IOV VF given to the guest as a NIC, so that libvirt
    sets its MAC and VLAN through the PF before the guest starts (a stable MAC in the guest);
    model as for hostdev."""
    element = ET.Element("interface", {"type": "hostdev", "managed": "yes" if managed else "no"})
    if model:
        ET.SubElement(element, "driver", {"model": model})
    if mac:
        ET.SubElement(element, "mac", {"address": mac})
    source = ET.SubElement(element, "source")
    source.append(address_element(address))
    source[0].set("type", "pci")
    if vlan:
        ET.SubElement(ET.SubElement(element, "vlan"), "tag", {"id": str(vlan)})
    return element


def pci_devices(domain_xml: str) -> list[tuple[PciAddress, ET.Element]]:
    """Host PCI functions a domain's XML gives to the guest, each with its element
    (<hostdev> or <interface type='hostdev'>) as libvirt needs it to detach that device."""
    if "hostdev" not in domain_xml:
        return []  # both kinds say hostdev: most domains' XML need not be parsed at all
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return []
    found = []
    elements = root.findall("./devices/hostdev[@type='pci']") + \
        root.findall("./devices/interface[@type='hostdev']")
    for element in elements:
        a = element.find("./source/address")
        if a is None or a.get("type", "pci") != "pci":
            continue
        try:
            address = PciAddress(int(a.get("domain", "0"), 0), int(a.get("bus", "0"), 0),
                                 int(a.get("slot", "0"), 0), int(a.get("function", "0"), 0))
        except (TypeError, ValueError):
            continue
        found.append((address, element))
    return found
