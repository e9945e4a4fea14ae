"""The mdevs a host's facts say pcimgr manages (its definitions in /etc/mdevctl.d), grouped
by type, for the exports: KubeVirt's `permittedHostDevices.mediatedDevices` (by the type's
name, as KubeVirt's own mdev plugin selects them) and Nova's `[devices]
enabled_mdev_types` with a `[mdev_TYPE]` group per type (its PCI parents and how many)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MdevPool:
    type_id: str                 # nvidia-226
    name: str | None             # its `name`: "GRID T4-2Q"
    parents: tuple[str, ...]     # the PCI parents' addresses ("" for a virtual parent)
    count: int                   # definitions of this type


def pools(facts: dict[str, Any]) -> list[MdevPool]:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for d in facts.get("mdevs", []):
        by_type.setdefault(d["type"], []).append(d)
    return [MdevPool(t, next((d["type_name"] for d in ds if d["type_name"]), None),
                     tuple(sorted({d["pci"] or "" for d in ds})), len(ds))
            for t, ds in sorted(by_type.items())]


def resource_name(prefix: str, pool: MdevPool) -> str:
    """KubeVirt's resource for a type: its name with what a resource name cannot hold as _."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", pool.name or pool.type_id).strip("_.-") or "mdev"
    return f"{prefix}/{base[:63]}"
