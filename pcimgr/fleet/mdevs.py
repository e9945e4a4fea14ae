"""The mdevs a host's facts say pcimgr manages (its definitions in /etc/mdevctl.d), grouped
by type, for the exports: KubeVirt's `permittedHostDevices.mediatedDevices` (by the type's
name, as KubeVirt's own mdev plugin selects them) and Nova's `[devices]
enabled_mdev_types` with a `[mdev_TYPE]` group per type (its PCI parents and how many).
And the vGPU types its PF definitions give VFs on NVIDIA's vendor interface: for KubeVirt,
PCI host devices another plugin advertises (NVIDIA's, by the type's name)."""

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


@dataclass(frozen=True)
class VgpuPool:
    vendor_id: str
    device_id: str               # the VFs'
    type_id: int
    name: str | None             # as the VF listed it when defined


def vgpu_pools(facts: dict[str, Any]) -> list[VgpuPool]:
    vf_ids = {p["address"]: (p["vendor_id"], p["vf_device_id"]) for p in facts["vfs"]}
    found: list[VgpuPool] = []
    for d in facts["definitions"]:
        ids = vf_ids.get(d["address"])
        if not d["ok"]:  # as the PCI pools: never a VF not as defined now
            continue
        for settings in (d.get("vf") or {}).values():
            if ids is None or ids[1] is None or "vgpu_type" not in settings:
                continue
            pool = VgpuPool(ids[0], ids[1], settings["vgpu_type"], settings.get("vgpu_name"))
            if pool not in found:
                found.append(pool)
    return found


def vgpu_resource(prefix: str, pool: VgpuPool) -> str:
    """NVIDIA's plugin names a VF's resource by its type's name (NVIDIA_L4-8Q)."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", pool.name or f"vgpu_{pool.type_id}").strip("_.-")
    return f"{prefix}/{base[:63] or 'vgpu'}"
