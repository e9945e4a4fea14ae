"""NUMA at assign: is the guest where its device is? A NIC's DMA and interrupts that cross
the socket interconnect cost the latency passthrough was meant to save. Compares the
function's NUMA node with the domain's vCPU placement (<vcpu cpuset>, <vcpupin>) and
memory (<numatune>), using the host's CPU lists per node (sysfs devices/system/node)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pcimgr.core.model import PciDevice
from pcimgr.host.sysfs import Sysfs

NODES = "devices/system/node"


def cpu_list(text: str) -> set[int]:
    """The kernel's and libvirt's CPU list syntax: "0-3,8,10-11" (a "^N" exclusion too)."""
    found: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        drop = part.startswith("^")
        lo, _, hi = part.lstrip("^").partition("-")
        try:
            span = set(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            continue
        found = found - span if drop else found | span
    return found


def node_cpus(sysfs: Sysfs) -> dict[int, set[int]]:
    nodes = {}
    for name in sysfs.list_dir(NODES):
        if name.startswith("node") and name[4:].isdigit():
            nodes[int(name[4:])] = cpu_list(sysfs.read_attr(f"{NODES}/{name}/cpulist") or "")
    return nodes


def placement(domain_xml: str) -> tuple[set[int] | None, set[int] | None]:
    """(the CPUs its vCPUs may run on, the nodes its memory is bound to); None: unpinned."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return None, None
    cpus: set[int] | None = None
    pins = [p.get("cpuset", "") for p in root.findall("./cputune/vcpupin")]
    vcpu = root.find("./vcpu")
    if pins:
        cpus = set().union(*(cpu_list(p) for p in pins))
    elif vcpu is not None and vcpu.get("cpuset"):
        cpus = cpu_list(vcpu.get("cpuset", ""))
    memory = root.find("./numatune/memory")
    nodes = cpu_list(memory.get("nodeset", "")) if memory is not None and \
        memory.get("nodeset") else None
    return cpus, nodes


def warnings(sysfs: Sysfs, device: PciDevice, domain: str, domain_xml: str) -> list[str]:
    node = device.numa_node
    nodes = node_cpus(sysfs)
    if node is None or len(nodes) < 2:
        return []  # one node: nothing to cross
    cpus, memory = placement(domain_xml)
    here = ",".join(str(c) for c in sorted(nodes.get(node, ())))
    found = []
    if cpus is None:
        found.append(f"note: {domain}'s vCPUs are not pinned; {device.address} is on NUMA node "
                     f"{node} (CPUs {here}): pin them there (virsh vcpupin, or <vcpu "
                     f"cpuset='{here}'>) to keep its DMA and interrupts on one socket")
    else:
        vcpu_nodes = sorted(n for n, cs in nodes.items() if cs & cpus)
        if node not in vcpu_nodes:
            found.append(f"warning: {domain}'s vCPUs run on NUMA node(s) "
                         f"{', '.join(map(str, vcpu_nodes))} and {device.address} is on node "
                         f"{node}: its DMA and interrupts cross the interconnect; pin the "
                         f"vCPUs to CPUs {here}")
    if memory is not None and node not in memory:
        found.append(f"warning: {domain}'s memory is bound to NUMA node(s) "
                     f"{', '.join(map(str, sorted(memory)))} and {device.address} is on node "
                     f"{node}: its DMA crosses the interconnect (<numatune> nodeset='{node}')")
    return found
