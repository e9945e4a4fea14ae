"""Kubernetes: the SR-IOV network device plugin's config.json (resourceList) and KubeVirt's
permittedHostDevices.pciHostDevices.

Field references (docs/fleet.md): the device plugin's README, "Config parameters" and
"Device selectors"; KubeVirt's API, v1.PermittedHostDevices / v1.PciHostDevice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pcimgr.core.escaping import yaml
from pcimgr.fleet.mdevs import MdevPool, VgpuPool, resource_name, vgpu_resource
from pcimgr.fleet.pools import Pool, ranges

DEFAULT_PREFIX = "intel.com"  # the device plugin's own default --resource-prefix


def device_plugin_config(pools: list[Pool], prefix: str) -> dict[str, Any]:
    """One node's config.json: a resource per pool, selectors that match its members only."""
    return {"resourceList": [{"resourceName": p.name, "resourcePrefix": prefix,
                              # netDevice: NIC functions, on vfio-pci or their host
                              # driver alike (the drivers selector tells which)
                              "deviceType": "netDevice" if p.network else "accelerator",
                              "selectors": _selectors(p)} for p in pools]}


def _selectors(p: Pool) -> dict[str, Any]:
    selectors: dict[str, Any] = {"vendors": [p.vendor_id], "devices": [p.device_id],
                                 "drivers": [p.driver]}
    if p.kind != "vf" or not p.network:
        # pfNames/rootDevices belong to netDevice pools; an address is exact for any
        selectors["pciAddresses"] = [m.address for m in p.members]
        return selectors
    by_pf: dict[str, list[int]] = {}
    names: dict[str, str | None] = {}
    for m in p.members:
        assert m.pf is not None and m.index is not None
        by_pf.setdefault(m.pf, []).append(m.index)
        names[m.pf] = m.pf_netdev
    if all(names.values()):
        selectors["pfNames"] = [f"{names[pf]}#{ranges(ix)}" for pf, ix in sorted(by_pf.items())]
    else:  # a PF without an interface is named by its address
        selectors["rootDevices"] = [f"{pf}#{ranges(ix)}" for pf, ix in sorted(by_pf.items())]
    return selectors


def configmap(config: dict[str, Any], name: str, namespace: str) -> str:
    """The ConfigMap the device plugin's DaemonSet mounts at /etc/pcidp (config.json)."""
    body = json.dumps(config, indent=2)  # ASCII: non-ASCII and controls as \u escapes
    return ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            f"  name: {yaml.scalar(name)}\n  namespace: {yaml.scalar(namespace)}\n"
            "data:\n  config.json: |\n" + yaml.literal(body, 4, "config.json"))


def kubevirt_patch(pools: list[Pool], prefix: str, external: bool,
                   mdev_pools: Sequence[MdevPool] = (),
                   vgpu_pools: Sequence[VgpuPool] = ()) -> dict[str, Any]:
    """A merge patch of the KubeVirt CR: the vfio-pci pools as permitted PCI host devices,
    the types of the mdevs pcimgr defines as permitted mediated devices, and the vGPU types
    its definitions give VFs (NVIDIA's vendor interface) as externally provided PCI devices.

    external: the device plugin above advertises them (exact selection by its
    selectors, variant pools too); otherwise KubeVirt's own plugin takes every function on
    vfio-pci with that vendor:device, and only those (a variant's pool is left out).
    """
    entries: list[dict[str, Any]] = []
    for p in pools:
        if not p.vfio or (p.variant is not None and not external):
            continue
        entry: dict[str, Any] = {"pciVendorSelector": f"{p.vendor_id}:{p.device_id}".upper(),
                                 "resourceName": f"{prefix}/{p.name}"}
        if external:
            entry["externalResourceProvider"] = True
        if entry not in entries:  # the same pool on many nodes is one entry
            entries.append(entry)
    for v in vgpu_pools:  # vGPU VFs stay on nvidia: NVIDIA's plugin advertises them
        entry = {"pciVendorSelector": f"{v.vendor_id}:{v.device_id}".upper(),
                 "resourceName": vgpu_resource(prefix, v), "externalResourceProvider": True}
        if entry not in entries:
            entries.append(entry)
    permitted: dict[str, Any] = {"pciHostDevices": entries}
    mediated: list[dict[str, Any]] = []
    for m in mdev_pools:  # KubeVirt's own mdev plugin selects them by the type's name
        entry = {"mdevNameSelector": m.name or m.type_id, "resourceName": resource_name(prefix, m)}
        if entry not in mediated:
            mediated.append(entry)
    if mediated:
        permitted["mediatedDevices"] = mediated
    return {"spec": {"configuration": {"permittedHostDevices": permitted}}}


def kubevirt_overreach(facts: dict[str, Any], pools: list[Pool]) -> list[str]:
    """Functions on vfio-pci that KubeVirt's own plugin would also take for a pool: same
    vendor:device, not pcimgr's."""
    ids = {(p.vendor_id, p.device_id) for p in pools if p.vfio}
    ours = {m.address for p in pools for m in p.members}
    return [f"{facts['host']}: {d['address']} ({d['vendor_id']}:{d['device_id']}) is on "
            "vfio-pci but not pcimgr's; KubeVirt's plugin would hand it out too (use the "
            "device plugin: drop --kubevirt-allocates)"
            for d in facts["devices"] if d["driver"] == "vfio-pci"
            and (d["vendor_id"], d["device_id"]) in ids and d["address"] not in ours]
