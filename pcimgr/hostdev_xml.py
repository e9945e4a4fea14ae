"""libvirt device XML for a PCI function, built as elements, never by string pasting."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pcimgr.address import PciAddress


def address_element(address: PciAddress) -> ET.Element:
    return ET.Element("address", {
        "domain": f"0x{address.domain:04x}",
        "bus": f"0x{address.bus:02x}",
        "slot": f"0x{address.slot:02x}",
        "function": f"0x{address.function:x}",
    })


def hostdev(address: PciAddress, managed: bool = True) -> ET.Element:
    """<hostdev mode='subsystem' type='pci' managed=...><source><address .../></source></hostdev>"""
    element = ET.Element("hostdev", {"mode": "subsystem", "type": "pci",
                                      "managed": "yes" if managed else "no"})
    ET.SubElement(element, "source").append(address_element(address))
    return element


def to_string(element: ET.Element) -> str:
    ET.indent(element, space="  ")
    return ET.tostring(element, encoding="unicode")
