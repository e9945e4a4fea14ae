"""One host's facts: the `list --all --json`, `groups --json`, `vfs list --json` documents and
the definitions with their status, under the host's name and pcimgr's version.

The Ansible module pcimgr_facts returns this as ansible_facts.pcimgr, `pcimgr export facts`
prints it, and the exports read it back (`--facts FILE`), so a configuration for a whole
fleet is built from facts gathered on each host.
"""

from __future__ import annotations

import json
import socket
from dataclasses import asdict
from typing import Any

from pcimgr import __version__
from pcimgr.core.errors import BadInput, NotFound
from pcimgr.host.machine import Machine
from pcimgr.host.names import Namer

FORMAT = 1
KEYS = ("format", "host", "pcimgr_version", "machine", "devices", "groups", "vfs",
        "definitions")


def gather(machine: Machine, config_dir: str, namer: Namer,
           host_name: str | None = None) -> dict[str, Any]:
    """host_name: how the fleet knows this host (Ansible's inventory_hostname); default the
    machine's own name."""
    from pcimgr.cli import render
    from pcimgr.drivers import safety
    from pcimgr.host import discovery, usage
    from pcimgr.persist import definitions
    from pcimgr.persist import planner as persist
    from pcimgr.sriov import planner as sriov
    sysfs = machine.sysfs
    host = discovery.scan(sysfs)
    survey = usage.survey(machine, deep=False)  # as `list`: no /proc scan
    defs = definitions.load_all(config_dir)[0]
    findings = {f.definition.address: f for f in persist.status(machine, host, survey, defs)}
    return {
        "format": FORMAT,
        "host": host_name or socket.gethostname(),
        "pcimgr_version": __version__,
        "machine": machine.kind,
        "devices": [render.device_json(d, namer, None, safety.host_use(sysfs, d, survey))
                    for d in host.devices],
        "groups": [render.group_json(g, namer) for g in host.groups.values()],
        "vfs": [render.vfs_json(v, namer) for v in sriov.survey(machine, host)],
        "definitions": [asdict(d) | {"ok": findings[d.address].ok,
                                     "drift": list(findings[d.address].drift)} for d in defs],
    }


def load(path: str) -> dict[str, Any]:
    """Facts saved by `pcimgr export facts > FILE` or from ansible_facts.pcimgr."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise NotFound(f"no facts file {path}; write one with `pcimgr export facts > FILE` "
                       "on the host, or from ansible_facts.pcimgr") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read facts from {path} ({e}); give the JSON `pcimgr export "
                       "facts` prints") from None
    missing = [k for k in KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise BadInput(f"{path} is not pcimgr facts (no {', '.join(missing)}); give the JSON "
                       "`pcimgr export facts` prints")
    if data["format"] != FORMAT:
        raise BadInput(f"{path} has facts format {data['format']}, this pcimgr reads {FORMAT}; "
                       "gather them again with this version")
    return data


def fleet_list(facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`list --all --json` of every host as one array, each function with its host and that
    host's pcimgr version, sorted by host then address."""
    seen: dict[str, int] = {}
    for f in facts:
        seen[f["host"]] = seen.get(f["host"], 0) + 1
    twice = sorted(h for h, n in seen.items() if n > 1)
    if twice:
        raise BadInput(f"facts of {', '.join(twice)} given twice; hosts need distinct names "
                       "(pcimgr_facts' host_name, e.g. inventory_hostname)")
    return [{"host": f["host"], "pcimgr_version": f["pcimgr_version"]} | d
            for f in sorted(facts, key=lambda f: f["host"]) for d in f["devices"]]
