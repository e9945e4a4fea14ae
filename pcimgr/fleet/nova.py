"""OpenStack Nova: the compute node's `[pci] device_spec` and `alias` options.

One device_spec per managed function, by exact address with its vendor and product id,
so Nova's whitelist matches those functions and nothing else; functions pcimgr keeps on
vfio-pci or a VFIO variant are `"managed": "no"`: Nova must not have libvirt detach them
from (or give them back to) the host, pcimgr does; on a variant that implements live
migration (fleet/migration.py) `"live_migratable": "yes"` (both tags: Nova 2025.1). One
alias per pool for flavors
(`pci_passthrough:alias`). Field reference: nova.conf's [pci] options (docs/fleet.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pcimgr.core.escaping import oslo
from pcimgr.fleet.mdevs import MdevPool
from pcimgr.fleet.migration import live_migratable
from pcimgr.fleet.pools import Pool

DEVICE_TYPES = {"vf": "type-VF", "pf": "type-PF", "pci": "type-PCI"}


def device_specs(pools: list[Pool], physnet: str | None) -> list[dict[str, Any]]:
    specs = []
    for p in pools:
        for m in p.members:
            spec: dict[str, Any] = {"vendor_id": p.vendor_id, "product_id": p.device_id,
                                    "address": m.address}
            if p.vfio:
                spec["managed"] = "no"
            if p.variant is not None and live_migratable(p.variant):
                spec["live_migratable"] = "yes"
            if physnet and p.network:
                spec["physical_network"] = physnet
            specs.append(spec)
    return specs


def aliases(pools: list[Pool]) -> list[dict[str, Any]]:
    return [{"name": p.name, "vendor_id": p.vendor_id, "product_id": p.device_id,
             "device_type": DEVICE_TYPES[p.kind]} for p in pools]


def mdev_types(mdev_pools: Sequence[MdevPool]) -> dict[str, dict[str, Any]]:
    """type -> its [mdev_TYPE] options; PCI parents only (Nova's device_addresses)."""
    return {m.type_id: {"device_addresses": [p for p in m.parents if p],
                        "max_instances": m.count}
            for m in mdev_pools if any(m.parents)}


def config(pools: list[Pool], physnet: str | None,
           mdev_pools: Sequence[MdevPool] = ()) -> str:
    # JSON with its non-ASCII escaped is one printable line; oslo.py escapes its `$`
    lines = ["[pci]"]
    lines += [f"device_spec = {oslo.value(json.dumps(s), 'device_spec')}"
              for s in device_specs(pools, physnet)]
    lines += [f"alias = {oslo.value(json.dumps(a), 'alias')}" for a in aliases(pools)]
    types = mdev_types(mdev_pools)
    if types:
        lines += ["", "[devices]",
                  f"enabled_mdev_types = {oslo.value(', '.join(types), 'enabled_mdev_types')}"]
        for type_id, options in types.items():
            lines += ["", f"[mdev_{type_id}]",
                      "device_addresses = " + oslo.value(",".join(options["device_addresses"]),
                                                         "device_addresses"),
                      f"max_instances = {options['max_instances']}"]
    return "\n".join(lines) + "\n"
