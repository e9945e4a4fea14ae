"""Plan steps of SR-IOV pools (issue 17): a libvirt network defined or removed (a pool's
interfaces are guests/steps.py's AttachDevice and DetachDevice, known by their MAC). Undo
looks at libvirt as it is now."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pcimgr.core import pool_xml
from pcimgr.core.errors import BadInput
from pcimgr.host import libvirt_adapter
from pcimgr.host.machine import Machine
from pcimgr.plans.step import StepBase, register

# a pool's network as pool_xml.network makes it (and libvirt gives it back: with its uuid)
_POOL_CHILDREN = {"name", "uuid", "forward", "vlan"}


def check_network(xml: str, name: str) -> None:
    """BadInput unless xml is the hostdev network called `name` that a pool defines: a
    journal's network XML is data, and libvirt would start whatever it describes."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise BadInput(f"the XML of network {name} does not parse ({e})") from None
    forward = root.find("./forward")
    if root.tag != "network" or root.findtext("./name") != name or forward is None or \
            forward.get("mode") != "hostdev" or {e.tag for e in root} - _POOL_CHILDREN:
        raise BadInput(f"refusing the XML of network {name}: it is not a pool's <network> "
                       "of that name (name, uuid, <forward mode='hostdev'> and vlan only)")


def _pf_dev(address: str, *xmls: str | None) -> tuple[tuple[str, str, bool], ...]:
    """The PF interface the networks name, which must be the pool PF's own."""
    return tuple((address, dev, False) for dev in
                 {pool_xml.network_pf(x) for x in xmls if x is not None} if dev is not None)


@register
@dataclass(frozen=True)
class DefineNetwork(StepBase):
    """address: the pool's PF."""

    address: str
    uri: str
    name: str
    xml: str
    previous: str | None   # the network this replaces (pool define again), for undo
    kind: str = "net-define"
    # libvirt checks at net-start that each address is an SR-IOV VF of its own host: a
    # simulated host's VFs are not, so there the network is only defined (autostart on)
    start: bool = True

    def __post_init__(self) -> None:
        # a journal's step is data: only URIs and networks pcimgr would use itself
        libvirt_adapter.check_uri(self.uri)
        pool_xml.check_name(self.name)
        for xml in (self.xml, self.previous):
            if xml is not None:
                check_network(xml, self.name)

    def undo_netdevs(self) -> tuple[tuple[str, str, bool], ...]:
        return _pf_dev(self.address, self.previous)

    def summary(self) -> str:
        return (f"{self.address}: libvirt network {self.name} (defined, "
                f"{'started, ' if self.start else ''}autostart)")

    def describe(self) -> list[str]:
        return _defining(self.uri, self.name, self.xml, self.start)

    def apply(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        if self.previous is not None:
            lv.undefine_network(self.name)  # a running network keeps its old VF list
        lv.define_network(self.xml, self.start)

    def undo_describe(self) -> list[str]:
        lines = _removing(self.uri, self.name)
        if self.previous is not None:
            lines += _defining(self.uri, self.name, self.previous, self.start)
        return lines

    def undo(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        lv.undefine_network(self.name)
        if self.previous is not None:
            lv.define_network(self.previous, self.start)


@register
@dataclass(frozen=True)
class UndefineNetwork(StepBase):
    address: str
    uri: str
    name: str
    xml: str               # what it was, for undo
    kind: str = "net-undefine"
    active: bool = True    # and whether it ran

    def __post_init__(self) -> None:
        libvirt_adapter.check_uri(self.uri)
        pool_xml.check_name(self.name)
        check_network(self.xml, self.name)

    def undo_netdevs(self) -> tuple[tuple[str, str, bool], ...]:
        return _pf_dev(self.address, self.xml)

    def summary(self) -> str:
        return f"{self.address}: libvirt network {self.name} removed"

    def describe(self) -> list[str]:
        return _removing(self.uri, self.name)

    def apply(self, machine: Machine) -> None:
        libvirt_adapter.connect(self.uri).undefine_network(self.name)

    def undo_describe(self) -> list[str]:
        return _defining(self.uri, self.name, self.xml, self.active, "   # unless it is there")

    def undo(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        if lv.network_xml(self.name) is None:
            lv.define_network(self.xml, self.active)


def _defining(uri: str, name: str, xml: str, start: bool, note: str = "") -> list[str]:
    """The virsh commands that define (and start) a network, as --dry-run shows them."""
    return [f"virsh -c {uri} net-define /dev/stdin <<EOF{note}", *xml.splitlines(), "EOF",
            *([f"virsh -c {uri} net-start {name}"] if start else []),
            f"virsh -c {uri} net-autostart {name}"]


def _removing(uri: str, name: str) -> list[str]:
    return [f"virsh -c {uri} net-destroy {name}", f"virsh -c {uri} net-undefine {name}"]
