"""Read the PCI tree behind core/topology.py's rules: each function's upstream bridge (from
its device path), its configuration space, reset methods and link, through the sysfs
layer. Unprivileged readers get the first 64 bytes of configuration space only: ACS and
FLR are then unknown, and the rules say so."""

from __future__ import annotations

import os

from pcimgr.core import configspace
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput
from pcimgr.core.model import BRIDGE_CLASSES, Host
from pcimgr.core.topology import Link, Node, Topology
from pcimgr.host.sysfs import Sysfs, device_path


def read(sysfs: Sysfs, host: Host) -> Topology:
    return Topology({d.address: node(sysfs, d.address, d.is_bridge) for d in host.devices})


def node(sysfs: Sysfs, address: PciAddress, is_bridge: bool) -> Node:
    attr = lambda name: sysfs.read_attr(device_path(address, name))  # noqa: E731
    methods = attr("reset_method")
    return Node(
        address=address,
        parent=_parent(sysfs, address),
        is_bridge=is_bridge,
        config=configspace.parse(sysfs.read_bytes(device_path(address, "config")) or b""),
        # no reset_method file: no method (the kernel hides it then) or a kernel before 5.15
        reset_methods=tuple(methods.split()) if methods else (),
        link=Link.parse(attr("current_link_speed"), attr("current_link_width")),
        link_max=Link.parse(attr("max_link_speed"), attr("max_link_width")),
    )


def _parent(sysfs: Sysfs, address: PciAddress) -> PciAddress | None:
    """The directory above the function's is its bridge's, or the root bus (pciDDDD:BB)."""
    above = os.path.basename(os.path.dirname(sysfs.resolve(device_path(address))))
    try:
        return PciAddress.parse(above)
    except BadInput:
        return None


def neighbourhood(sysfs: Sysfs, address: PciAddress) -> Topology:
    """What a reset of one function concerns, without reading the whole bus: the function,
    the bridges above it, and every function behind its upstream bridge."""
    nodes: dict[PciAddress, Node] = {}
    own = node(sysfs, address, _is_bridge(sysfs, address))
    nodes[address] = own
    parent = own.parent
    while parent is not None and parent not in nodes:
        nodes[parent] = node(sysfs, parent, True)
        parent = nodes[parent].parent
    if own.parent is not None:
        for a in _below(sysfs, os.path.relpath(sysfs.resolve(device_path(own.parent)),
                                               sysfs.root)):
            if a not in nodes:
                nodes[a] = node(sysfs, a, _is_bridge(sysfs, a))
    return Topology(nodes)


def _below(sysfs: Sysfs, rel: str) -> list[PciAddress]:
    found = []
    for name in sysfs.list_dir(rel):
        try:
            address = PciAddress.parse(name)
        except BadInput:
            continue
        if sysfs.read_link(f"{rel}/{name}") is not None:
            continue  # virtfnN-like links point elsewhere; real children are directories
        found.append(address)
        found += _below(sysfs, f"{rel}/{name}")
    return found


def _is_bridge(sysfs: Sysfs, address: PciAddress) -> bool:
    klass = sysfs.read_attr(device_path(address, "class")) or "0x0"
    try:
        return int(klass, 16) >> 8 in BRIDGE_CLASSES
    except ValueError:
        return False


def around(sysfs: Sysfs, addresses: list[PciAddress]) -> Topology:
    """The functions and the bridges above them: enough to say why they share a group."""
    nodes: dict[PciAddress, Node] = {}
    for address in addresses:
        current: PciAddress | None = address
        while current is not None and current not in nodes:
            nodes[current] = node(sysfs, current, _is_bridge(sysfs, current))
            current = nodes[current].parent
    return Topology(nodes)
