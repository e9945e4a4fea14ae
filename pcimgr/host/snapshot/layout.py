"""The snapshot's layout, shared by the writer and the reader (docs/snapshots.md)."""

from __future__ import annotations

import json
import os
from typing import Any

from pcimgr.core.errors import Damaged

MANIFEST = "pcimgr-snapshot.json"
FORMAT = "pcimgr-snapshot"
VERSION = 1
SYS = "sys"        # the sysfs tree, as /sys lays it out (the parts pcimgr reads)
DEV = "dev"        # empty files where the host had device nodes pcimgr looks for
SYSTEM = "system"  # proc/, lib/modules/REL/modules.alias, boot/config-REL, run/udev/data/
CONFIG = "config"  # the host's /etc/pcimgr: its definitions and pools

# the host's own files a read command reads (relative to its /); nothing from /etc: an
# administrator's configuration may hold what a support ticket must not
SYSTEM_FILES = ("proc/cmdline", "proc/cpuinfo", "proc/sys/kernel/osrelease")
RELEASE_FILES = ("lib/modules/{release}/modules.alias", "boot/config-{release}")
DEV_NODES = ("vfio", "iommu", "vhost-net")

# the manifest's `host` keys besides the recorded facts (host/recorded.py's KEYS)
HOST_KEYS = ("hostname", "kernel", "cmdline", "interrupt_remapping", "modules",
             "vfio_holders", "vf_configs")


def has_manifest(root: str) -> bool:
    return os.path.isfile(os.path.join(root, MANIFEST))


def read_manifest(root: str) -> dict[str, Any]:
    """The manifest, checked for the shape the readers rely on (Damaged otherwise)."""
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(64 << 20))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise Damaged(f"{path} is not a pcimgr snapshot's manifest ({e}); take the snapshot "
                      "again with `pcimgr snapshot FILE`") from None
    problem = _problem(data)
    if problem:
        raise Damaged(f"{path} is not a pcimgr snapshot's manifest ({problem}); take the "
                      "snapshot again with `pcimgr snapshot FILE`")
    found: dict[str, Any] = data
    return found


def _problem(data: Any) -> str | None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f"no \"format\": \"{FORMAT}\""
    if data.get("version") != VERSION:
        return (f"version {data.get('version')!r}; this pcimgr reads version {VERSION} "
                "(a newer pcimgr wrote it?)")
    host = data.get("host")
    if not isinstance(host, dict):
        return "no \"host\" object"
    shapes: dict[str, type | tuple[type, ...]] = {
        "hostname": str, "kernel": str, "cmdline": str, "interrupt_remapping": bool,
        "modules": list, "vfio_holders": dict, "vf_configs": dict, "addresses": dict,
        "routes": dict, "mounts": dict, "network_mounts": dict, "swaps": list,
        "open_blocks": dict, "routes_to": dict}
    for key, kind in shapes.items():
        if key in host and not isinstance(host[key], kind):
            return f"host.{key} is not a {getattr(kind, '__name__', kind)}"
    for key in ("addresses", "routes", "open_blocks"):
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                   for v in host.get(key, {}).values()):
            return f"host.{key} values are not lists of strings"
    for key in ("mounts", "network_mounts"):
        if not all(isinstance(v, str) for v in host.get(key, {}).values()):
            return f"host.{key} values are not strings"
    if not all(isinstance(v, (str, type(None))) for v in host.get("routes_to", {}).values()):
        return "host.routes_to values are not strings"
    if not all(isinstance(x, str) for x in (*host.get("modules", ()), *host.get("swaps", ()))):
        return "host.modules or host.swaps hold something else than names"
    if not all(k.isdigit() and isinstance(v, list) and all(isinstance(p, str) for p in v)
               for k, v in host.get("vfio_holders", {}).items()):
        return "host.vfio_holders is not group -> processes"
    if not all(isinstance(v, list) and all(isinstance(c, dict) for c in v)
               for v in host.get("vf_configs", {}).values()):
        return "host.vf_configs is not PF -> list of VF settings"
    guests = data.get("guests")
    if guests is not None and not (isinstance(guests, list) and all(
            isinstance(g, dict) and isinstance(g.get("name"), str)
            and isinstance(g.get("uuid"), str) and isinstance(g.get("active"), bool)
            and all(isinstance(g.get(k), (str, type(None))) for k in ("live_xml", "config_xml"))
            for g in guests)):
        return "guests is not a list of domains (name, uuid, active, live_xml, config_xml)"
    return None
