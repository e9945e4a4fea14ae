"""Proxmox VE: cluster PCI resource mappings (Datacenter > Resource Mappings), as `pvesh`
commands. Each map entry names the node and the function by path and carries the
vendor:device id, subsystem id and IOMMU group: what Proxmox checks at VM start to see
that the hardware has not changed, and what pcimgr's definitions record for the same
reason. Field reference: the PVE API, /cluster/mapping/pci (docs/fleet.md).
"""

from __future__ import annotations

import re

from pcimgr.core.escaping import pve, shell
from pcimgr.core.escaping.refuse import refuse, shown
from pcimgr.fleet.pools import Member, Pool

_MAPPING_ID = re.compile(r"[a-z][a-z0-9_-]*")  # PVE's pve-configid


def map_entry(node: str, pool: Pool, m: Member) -> str:
    """One --map property string; every value from the node's facts is checked (pve.py)."""
    parts = [("node", node), ("path", m.address), ("id", f"{pool.vendor_id}:{pool.device_id}")]
    if m.subsystem:
        parts.append(("subsystem-id", m.subsystem))
    if m.iommu_group is not None:
        parts.append(("iommugroup", str(m.iommu_group)))
    return pve.property_string(parts, f"the facts of {shown(node)}")


def mappings(pools: list[Pool]) -> dict[str, list[str]]:
    """Mapping id -> its map entries over every node (vfio-pci pools only: Proxmox passes
    devices through VFIO)."""
    found: dict[str, list[str]] = {}
    for p in pools:
        if p.vfio:
            if not _MAPPING_ID.fullmatch(p.name):
                raise refuse(f"the facts of {shown(p.host)}: mapping id", p.name, "is not an id "
                             "Proxmox accepts (from vendor_id and device_id)",
                             "correct the facts, gathered again on that host")
            found.setdefault(p.name, []).extend(map_entry(p.host, p, m) for m in p.members)
    return found


def kept(pools: list[Pool]) -> set[str]:
    """Mappings of VFIO variant pools: Proxmox would rebind their functions to vfio-pci (and
    reset them) at VM start unless the VM's hostpci entry says driver=keep (qemu-server
    9.0.25), which is a VM option, not a mapping property."""
    return {p.name for p in pools if p.variant is not None}


def pvesh(found: dict[str, list[str]], keep: set[str] | None = None) -> str:
    lines = ["# pcimgr export proxmox: run once on any node of the cluster"]
    for mapping, entries in sorted(found.items()):
        if mapping in (keep or ()):
            lines.append(f"# {mapping}: on a VFIO variant driver: guests use "
                         f"hostpciN: mapping={mapping},driver=keep")
        lines.append(f"pvesh create /cluster/mapping/pci --id {shell.word(mapping, 'id')} "
                     f"--description {shell.word(f'pcimgr pool {mapping}', 'description')} \\")
        lines += [f"  --map {shell.word(e, 'map')}" + (" \\" if i < len(entries) - 1 else "")
                  for i, e in enumerate(entries)]
    return "\n".join(lines) + "\n"
