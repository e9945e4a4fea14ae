"""Output of the mdev commands: tables for people, JSON with the schema of docs/json.md.
render is imported for tables only: JSON output stays light."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pcimgr.core.mdev import Definition, Mdev, MdevParent, MdevType, VendorVgpu
from pcimgr.core.terminal import safe

if TYPE_CHECKING:
    from pcimgr.host.names import Namer
    from pcimgr.host.sysfs import Sysfs


def type_json(t: MdevType) -> dict[str, Any]:
    return {"type": t.id, "name": t.name, "description": t.description,
            "device_api": t.device_api, "available_instances": t.available,
            "mdevs": list(t.devices)}


def parent_json(p: MdevParent) -> dict[str, Any]:
    return {"parent": p.name, "pci": p.pci, "driver": p.driver,
            "types": [type_json(t) for t in p.types]}


def _one_line(text: str | None) -> str:
    return ", ".join(line.strip() for line in (text or "").splitlines() if line.strip())


def _parent_title(p: MdevParent, names: Mapping[str, str]) -> str:
    what = names.get(p.name) if p.pci else "virtual device"
    driver = f", {p.driver}" if p.driver else ""
    return safe(f"{p.name}  ({what or 'PCI function'}{driver})")


def types_text(found: list[MdevParent], names: Mapping[str, str]) -> str:
    from pcimgr.cli.render import table
    blocks = []
    for p in found:
        rows = [[t.id, t.name or "", t.device_api or "?",
                 "?" if t.available is None else str(t.available), str(len(t.devices)),
                 _one_line(t.description)] for t in p.types]
        body = table(rows, ["TYPE", "NAME", "API", "AVAILABLE", "LIVE", "DESCRIPTION"]) \
            if rows else "(no types)"
        blocks.append(_parent_title(p, names) + "\n" + "\n".join(
            "  " + line.rstrip() for line in body.splitlines()))
    return "\n".join(blocks)


def parent_names(sysfs: Sysfs, found: list[MdevParent], namer: Namer) -> dict[str, str]:
    """The device names of the PCI parents (pci.ids, udev), read for those alone."""
    from pcimgr.cli.render import device_name
    from pcimgr.core.address import PciAddress
    from pcimgr.host import discovery
    pci = tuple(PciAddress.parse(p.pci) for p in found if p.pci)
    if not pci:
        return {}
    host = discovery.scan_related(sysfs, pci)
    return {str(a): device_name(d, namer) for a in pci if (d := host.get(a)) is not None}


def _holders(m: Mdev, holders: Mapping[int, list[str]]) -> list[str]:
    return list(holders.get(m.iommu_group, [])) if m.iommu_group is not None else []


def mdev_json(m: Mdev, guests: Mapping[str, list[str]] | None,
              holders: Mapping[int, list[str]]) -> dict[str, Any]:
    return {"uuid": m.uuid, "parent": m.parent, "type": m.type_id, "driver": m.driver,
            "iommu_group": m.iommu_group,
            "guests": None if guests is None else sorted(guests.get(m.uuid, [])),
            "held_by": _holders(m, holders)}


def mdevs_text(live: list[Mdev], guests: Mapping[str, list[str]] | None,
               holders: Mapping[int, list[str]]) -> str:
    from pcimgr.cli.render import table
    rows = []
    for m in live:
        guest = "?" if guests is None else ", ".join(sorted(guests.get(m.uuid, []))) or "-"
        rows.append([m.uuid, m.parent, m.type_id or "?", str(m.iommu_group or "-"),
                     m.driver or "-", guest, ", ".join(_holders(m, holders)) or "-"])
    return table(rows, ["UUID", "PARENT", "TYPE", "GROUP", "DRIVER", "GUEST", "HELD BY"])


def state_of(d: Definition, live: Mdev | None, sysfs: Sysfs) -> str:
    """running, stopped, running as another type or elsewhere, or its parent gone."""
    from pcimgr.host import mdevs
    if live is not None:
        if (live.parent, live.type_id) == (d.parent, d.type_id):
            return "running"
        return f"running as {live.parent} {live.type_id}"
    if mdevs.read_parent(sysfs, d.parent) is None:
        return "parent absent"
    return "stopped"


def defined_rows(found: list[Definition], live: list[Mdev], sysfs: Sysfs) -> list[dict[str, Any]]:
    by_uuid = {m.uuid: m for m in live}
    return [{"uuid": d.uuid, "parent": d.parent, "type": d.type_id, "start": d.start,
             "attrs": [{k: v} for k, v in d.attrs],
             "state": state_of(d, by_uuid.get(d.uuid), sysfs)}
            for d in sorted(found, key=lambda d: (d.parent, d.uuid))]


def defined_text(rows: list[dict[str, Any]]) -> str:
    from pcimgr.cli.render import table
    return table([[r["uuid"], r["parent"], r["type"], r["start"], r["state"],
                   ", ".join(f"{k}={v}" for a in r["attrs"] for k, v in a.items()) or "-"]
                  for r in rows], ["UUID", "PARENT", "TYPE", "START", "STATE", "ATTRS"])


def vgpu_json(v: VendorVgpu, guests: Mapping[str, list[str]] | None) -> dict[str, Any]:
    return {"vf": v.vf, "current_vgpu_type": v.current or None,
            "creatable": [{"id": t.id, "name": t.name} for t in v.creatable],
            "guests": None if guests is None else guests.get(v.vf, [])}


def vgpus_text(found: list[VendorVgpu], guests: Mapping[str, list[str]] | None) -> str:
    from pcimgr.cli.render import table
    rows = []
    for v in found:
        can = ", ".join(f"{t.id} {t.name.split(' ', 1)[-1]}" for t in v.creatable)
        guest = "?" if guests is None else ", ".join(guests.get(v.vf, [])) or "-"
        rows.append([v.vf, str(v.current or "-"), guest, can or "-"])
    return table(rows, ["VF", "VGPU TYPE", "GUEST", "CAN TAKE NOW"])


def vendor_types_text(v: VendorVgpu) -> str:
    from pcimgr.cli.render import table
    body = table([[str(t.id), t.name] for t in v.creatable], ["ID", "NAME"]) \
        if v.creatable else "(none it can take now)"
    head = f"{v.vf}  (vendor vGPU interface, nvidia; vGPU type now: {v.current or 'none'})"
    return safe(head) + "\n" + "\n".join("  " + line.rstrip() for line in body.splitlines())


# -- a PCI function as an mdev parent or a vendor vGPU VF (show, tree) -------------------

def of_function(sysfs: Sysfs, address: str) -> tuple[MdevParent | None, VendorVgpu | None]:
    from pcimgr.host import mdevs, vgpus
    return mdevs.read_parent(sysfs, address), vgpus.read(sysfs, address)


def function_json(parent: MdevParent | None, vgpu: VendorVgpu | None) -> dict[str, Any]:
    return {"mdev_parent": None if parent is None else {
                "types": [type_json(t) for t in parent.types]},
            "vgpu": None if vgpu is None else vgpu_json(vgpu, None) | {"guests": None}}


def function_fields(parent: MdevParent | None,
                    vgpu: VendorVgpu | None) -> list[tuple[str, str]]:
    fields = []
    if parent is not None:
        fields.append(("mdev types", ", ".join(
            f"{t.id} ({'?' if t.available is None else t.available} left)"
            for t in parent.types) or "none"))
        live = [u for t in parent.types for u in t.devices]
        fields.append(("mdevs", ", ".join(live) or "none"))
    if vgpu is not None:
        fields.append(("vgpu type", f"{vgpu.current or 'none'}; can take now: "
                       + (", ".join(str(t.id) for t in vgpu.creatable) or "none")))
    return fields


def tree_fact(parent: MdevParent | None, vgpu: VendorVgpu | None) -> list[str]:
    found = []
    if parent is not None:
        live = sum(len(t.devices) for t in parent.types)
        found.append(f"mdev parent: {len(parent.types)} types, {live} live")
    if vgpu is not None:
        found.append(f"vGPU {vgpu.current or 'none'}")
    return found
