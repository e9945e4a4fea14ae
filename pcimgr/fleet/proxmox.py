"""Proxmox VE: cluster PCI resource mappings (Datacenter > Resource Mappings), as `pvesh`
commands. Each map entry names the node and the function by path and carries the
vendor:device id, subsystem id and IOMMU group: what Proxmox checks at VM start to see
that the hardware has not changed, and what pcimgr's definitions record for the same
reason. Field reference: the PVE API, /cluster/mapping/pci (docs/fleet.md).
"""

from __future__ import annotations

import shlex

from pcimgr.fleet.pools import Member, Pool


def map_entry(node: str, pool: Pool, m: Member) -> str:
    parts = [f"node={node}", f"path={m.address}", f"id={pool.vendor_id}:{pool.device_id}"]
    if m.subsystem:
        parts.append(f"subsystem-id={m.subsystem}")
    if m.iommu_group is not None:
        parts.append(f"iommugroup={m.iommu_group}")
    return ",".join(parts)


def mappings(pools: list[Pool]) -> dict[str, list[str]]:
    """Mapping id -> its map entries over every node (vfio-pci pools only: Proxmox passes
    devices through VFIO)."""
    found: dict[str, list[str]] = {}
    for p in pools:
        if p.vfio:
            found.setdefault(p.name, []).extend(map_entry(p.host, p, m) for m in p.members)
    return found


def pvesh(found: dict[str, list[str]]) -> str:
    lines = ["# pcimgr export proxmox: run once on any node of the cluster"]
    for mapping, entries in sorted(found.items()):
        lines.append(f"pvesh create /cluster/mapping/pci --id {mapping} --description "
                     + shlex.quote(f"pcimgr pool {mapping}") + " \\")
        lines += [f"  --map {shlex.quote(e)}" + (" \\" if i < len(entries) - 1 else "")
                  for i, e in enumerate(entries)]
    return "\n".join(lines) + "\n"
