"""tree: the PCI tree as the kernel enumerated it, with names, IOMMU groups, drivers, NUMA
nodes, links (a link trained below what both ends support is flagged) and reset methods."""

from __future__ import annotations

from typing import Any

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import emit_json, json_option
from pcimgr.core.address import PciAddress
from pcimgr.core.model import Host, PciDevice
from pcimgr.core.readiness import readiness
from pcimgr.core.topology import Link, Topology


@click.command()
@json_option
@click.pass_obj
def tree(obj: Context, as_json: bool) -> None:
    """Root ports, bridges and functions as a tree (like `lspci -t`, with names), each
    with IOMMU group, driver, NUMA node, PCIe link (current and maximum) and reset methods;
    DEGRADED marks a link that trained below what both ends support."""
    from pcimgr.host import topology
    host = obj.host()
    topo = topology.read(obj.sysfs, host)
    if as_json:
        emit_json([_node_json(a, host, topo, obj) for a in topo.roots])
        return
    lines: list[str] = []
    for address in topo.roots:
        _node_text(address, host, topo, obj, "", "", lines)
    click.echo("\n".join(lines))
    degraded = [a for a in topo.nodes if topo.degraded(a)]
    if degraded:
        click.echo(f"pcimgr: {len(degraded)} link(s) trained below what both ends support: "
                   "reseat the card, try another slot, or check the slot's wiring (a x16 "
                   "slot may carry x4)", err=True)


def _node_text(address: PciAddress, host: Host, topo: Topology, obj: Context, first: str,
               rest: str, lines: list[str]) -> None:
    from pcimgr.cli import render
    d = host.require(address)
    node = topo.nodes[address]
    ready = readiness(d)
    facts = [(d.driver or "no driver") + (f" ({ready.kind}: ready for a guest)"
                                           if ready.kind in ("variant", "vendor") else ""),
             f"group {_opt(d.iommu_group)}", f"numa {_opt(d.numa_node)}"]
    if node.link is not None:
        facts.append(_link_text(node.link, node.link_max))
    if node.reset_methods:
        facts.append("reset " + ",".join(node.reset_methods))
    from pcimgr.cli import mdev_render
    facts += mdev_render.tree_fact(*mdev_render.of_function(obj.sysfs, str(address)))
    degraded = topo.degraded(address)
    flag = f"  DEGRADED: {degraded}" if degraded else ""
    lines.append(f"{first}{address}  {render.device_label(d, obj.namer, None)}  "
                 f"[{'; '.join(facts)}]{flag}")
    children = topo.children(address)
    for i, child in enumerate(children):
        last = i == len(children) - 1
        _node_text(child, host, topo, obj, rest + ("`-" if last else "+-"),
                   rest + ("  " if last else "| "), lines)


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def _link_text(link: Link, best: Link | None) -> str:
    return f"{link}" + (f" (max {best})" if best is not None and best != link else "")


def _link_json(link: Link | None) -> dict[str, Any] | None:
    return None if link is None else {"speed_gts": link.speed, "width": link.width}


def _node_json(address: PciAddress, host: Host, topo: Topology, obj: Context) -> dict[str, Any]:
    from pcimgr.cli import mdev_render, render
    d: PciDevice = host.require(address)
    node = topo.nodes[address]
    return {
        "address": str(address),
        "name": render.device_name(d, obj.namer),
        "ids": d.ids,
        "driver": d.driver,
        "iommu_group": d.iommu_group,
        "numa_node": d.numa_node,
        "bridge": d.is_bridge,
        "port_type": node.config.port_type,
        "link": _link_json(node.link),
        "link_max": _link_json(node.link_max),
        "degraded": topo.degraded(address),
        "reset_methods": list(node.reset_methods or ()),
        "vfio": render.vfio_json(d),
        **mdev_render.function_json(*mdev_render.of_function(obj.sysfs, str(address))),
        "children": [_node_json(c, host, topo, obj) for c in topo.children(address)],
    }
