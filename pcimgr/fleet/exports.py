"""`pcimgr export FORMAT`: each format from one host's facts, or a fleet's.

Per-node formats (the device plugin's config.json and Nova's [pci] options live on each
node) take one host's facts; the cluster-wide ones (KubeVirt's CR, Proxmox's mappings,
the inventory) merge every host's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pcimgr.core.errors import BadInput
from pcimgr.fleet import facts as facts_mod
from pcimgr.fleet import k8s, nova, proxmox
from pcimgr.fleet.mdevs import pools as mdev_pools
from pcimgr.fleet.mdevs import vgpu_pools
from pcimgr.fleet.pools import Pool, pools


@dataclass(frozen=True)
class Options:
    resource_prefix: str = k8s.DEFAULT_PREFIX
    configmap: bool = False
    configmap_name: str = "sriovdp-config"
    namespace: str = "kube-system"
    physnet: str | None = None
    kubevirt_allocates: bool = False
    as_json: bool = False


# format -> (one node only, the options it takes besides its defaults)
FORMATS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "facts": (True, ()),
    "inventory": (False, ()),
    "sriov-device-plugin": (True, ("resource_prefix", "configmap", "configmap_name",
                                   "namespace")),
    "kubevirt": (False, ("resource_prefix", "kubevirt_allocates")),
    "proxmox": (False, ("as_json",)),
    "nova": (True, ("physnet", "as_json")),
}


def check(fmt: str, hosts: int, options: Options) -> None:
    """Refuse options the format does not read, and a fleet for a per-node format."""
    single, takes = FORMATS[fmt]
    stray = [k for k, v in vars(options).items()
             if k not in takes and v != getattr(Options(), k)]
    if stray:
        raise BadInput(f"export {fmt} takes no " + ", ".join(
            "--" + k.replace("_", "-").replace("as-json", "json") for k in stray)
            + "; see `pcimgr export --help` for what each format reads")
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9.-]*", options.resource_prefix):
        raise BadInput(f"not a resource prefix: {options.resource_prefix!r}; give a domain "
                       "such as example.com (letters, digits, dots, dashes)")
    if single and hosts > 1:
        raise BadInput(f"export {fmt} describes one node and got facts of {hosts} hosts; "
                       "export each host's facts on its own (one --facts FILE)")
    if "configmap" not in takes or options.configmap or (
            options.configmap_name == Options().configmap_name
            and options.namespace == Options().namespace):
        return
    raise BadInput("--configmap-name and --namespace belong to the ConfigMap; add --configmap")


def render(fmt: str, fleet: list[dict[str, Any]], options: Options) -> tuple[str, list[str]]:
    """The text to print, and notices for stderr."""
    check(fmt, len(fleet), options)
    if fmt == "facts":
        return _json(fleet[0]), []
    if fmt == "inventory":
        return _json(facts_mod.fleet_list(fleet)), []
    found: list[Pool] = []
    notices: list[str] = []
    for f in fleet:
        host_pools, why = pools(f)
        found += host_pools
        notices += why
    mdev_found = [m for f in fleet for m in mdev_pools(f)]
    vgpu_found = [v for f in fleet for v in vgpu_pools(f)]
    if not found and not ((mdev_found or vgpu_found) and fmt in ("kubevirt", "nova")):
        notices.append("no managed pools: define functions (`pcimgr define`, or the Ansible "
                       "modules with persistent: true) and apply them first")
    if fmt == "sriov-device-plugin":
        config = k8s.device_plugin_config(found, options.resource_prefix)
        return (k8s.configmap(config, options.configmap_name, options.namespace)
                if options.configmap else _json(config)), notices
    if fmt == "kubevirt":
        if options.kubevirt_allocates:
            for f in fleet:
                notices += k8s.kubevirt_overreach(f, found)
        return _json(k8s.kubevirt_patch(found, options.resource_prefix,
                                        not options.kubevirt_allocates, mdev_found,
                                        vgpu_found)), notices
    if fmt == "proxmox":
        found_maps = proxmox.mappings(found)
        keep = proxmox.kept(found)
        notices += [f"mapping {m}: its functions are on a VFIO variant driver; give them to "
                    f"guests as `hostpciN: mapping={m},driver=keep` (qemu-server >= 9.0.25), "
                    "or Proxmox rebinds them to vfio-pci" for m in sorted(keep)]
        return (_json(found_maps) if options.as_json else proxmox.pvesh(found_maps, keep)), \
            notices
    notices += [f"mdev type {m.type_id}: its parents are not PCI functions, and Nova assigns "
                "mdevs of PCI parents only (left out)" for m in mdev_found if not any(m.parents)]
    if options.as_json:
        return _json({"device_spec": nova.device_specs(found, options.physnet),
                      "alias": nova.aliases(found), "mdev_types": nova.mdev_types(mdev_found)}
                     ), notices
    return nova.config(found, options.physnet, mdev_found), notices


def _json(data: Any) -> str:
    # configuration files are read and reviewed by people: always indented
    return json.dumps(data, indent=2) + "\n"
