"""One host's facts: the `list --all --json`, `groups --json`, `vfs list --json` documents and
the definitions with their status, under the host's name and pcimgr's version.

The Ansible module pcimgr_facts returns this as ansible_facts.pcimgr, `pcimgr export facts`
prints it, and the exports read it back (`--facts FILE`), so a configuration for a whole
fleet is built from facts gathered on each host.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from dataclasses import asdict
from typing import Any

from pcimgr import __version__
from pcimgr.core import fleetnames
from pcimgr.core.errors import BadInput, NotFound
from pcimgr.fleet import facts_schema
from pcimgr.host.machine import Machine
from pcimgr.host.names import Namer

FORMAT = 1
KEYS = ("format", "host", "pcimgr_version", "machine", "devices", "groups", "vfs",
        "definitions")
# A host's facts take about 1 KiB per function: 16 MiB is thousands of functions, and
# bounds what --facts reads into memory.
MAX_BYTES = 16 * 2**20


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
    # as load checks it: facts that every export can read back
    name = fleetnames.check("host", "the host name", host_name or socket.gethostname())
    sysfs = machine.sysfs
    host = discovery.scan(sysfs)
    survey = usage.survey(machine, deep=False)  # as `list`: no /proc scan
    defs = definitions.load_all(config_dir)[0]
    findings = {f.definition.address: f for f in persist.status(machine, host, survey, defs)}
    return {
        "format": FORMAT,
        "host": name,
        "pcimgr_version": __version__,
        "machine": machine.kind,
        "devices": [render.device_json(d, namer, None, safety.host_use(sysfs, d, survey))
                    for d in host.devices],
        "groups": [render.group_json(g, namer) for g in host.groups.values()],
        "vfs": [render.vfs_json(v, namer) for v in sriov.survey(machine, host)],
        "definitions": [asdict(d) | {"ok": findings[d.address].ok,
                                     "drift": list(findings[d.address].drift)} for d in defs],
        "mdevs": _mdevs(machine),
    }


def _mdevs(machine: Machine) -> list[dict[str, Any]]:
    """The mdev definitions (mdevctl's files), each with its parent's PCI address and its
    type's name and API where the parent is there now, and whether it runs as defined."""
    from pcimgr.host import mdevs
    from pcimgr.mdev import definitions as mdev_definitions
    parents = {p.name: p for p in mdevs.parents(machine.sysfs)}
    found = []
    for d in mdev_definitions.load_all(machine).definitions:
        parent = parents.get(d.parent)
        kind = parent.type(d.type_id) if parent is not None else None
        live = mdevs.read_mdev(machine.sysfs, d.uuid)
        found.append({"uuid": d.uuid, "parent": d.parent,
                      "pci": parent.pci if parent is not None else None, "type": d.type_id,
                      "type_name": kind.name if kind is not None else None,
                      "device_api": kind.device_api if kind is not None else None,
                      "start": d.start, "running": live is not None and (
                          live.parent, live.type_id) == (d.parent, d.type_id)})
    return found


def load(path: str) -> dict[str, Any]:
    """Facts saved by `pcimgr export facts > FILE` or from ansible_facts.pcimgr, checked
    (facts_schema) before any export reads them."""
    fix = "give the JSON `pcimgr export facts` prints"
    text = _read(path)
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # RecursionError: nested past Python's stack
        raise BadInput(f"cannot read facts from {path} ({type(e).__name__}: "
                       f"{str(e)[:200]}); {fix}") from None
    missing = [k for k in KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise BadInput(f"{path} is not pcimgr facts (no {', '.join(missing)}); {fix}")
    if data["format"] != FORMAT:
        raise BadInput(f"{path} has facts format {str(data['format'])[:20]}, this pcimgr reads "
                       f"{FORMAT}; gather them again with this version")
    try:
        facts_schema.check(data)
    except facts_schema.Invalid as e:
        raise BadInput(f"{path}: {e}; {fix}") from None
    return data


def _read(path: str) -> bytes:
    """At most MAX_BYTES of a regular file: never a FIFO that blocks, a device that never
    ends (/dev/zero) or a symbolic link's target."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"no facts file {path}; write one with `pcimgr export facts > FILE` "
                       "on the host, or from ansible_facts.pcimgr") from None
    except OSError as e:
        why = ("it is a symbolic link; give the file it points to" if e.errno == errno.ELOOP
               else f"{e.strerror}; give a readable file")
        raise BadInput(f"cannot read facts from {path}: {why}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadInput(f"{path} is not a regular file; save the facts to a file first "
                           "(`pcimgr export facts > FILE`)")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise BadInput(f"cannot read facts from {path}: {e.strerror}; give a readable "
                       "file") from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise BadInput(f"{path} is larger than {MAX_BYTES // 2**20} MiB, the most facts of "
                       "one host take; give the JSON `pcimgr export facts` prints")
    return b"".join(chunks)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


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
