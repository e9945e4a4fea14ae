"""Hand-off profiles: CONFIG_DIR/handoff/<guest>.json (default /etc/pcimgr), one readable
JSON file per guest, written as one change under the host's lock (plans/filechange). The
hook reads the file of the guest libvirt starts; a guest without one is none of pcimgr's.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pcimgr.core import handoff
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, NotFound
from pcimgr.plans import filechange, statefile

DIR = "handoff"
FIX = ("check it against `pcimgr handoff define --help`, or remove it and define the "
       "hand-off again")


def path(config: str, vm: str) -> str:
    return os.path.join(config, DIR, f"{handoff.check_vm(vm)}.json")


def load(config: str, vm: str) -> handoff.Profile | None:
    """The guest's profile, None without one; Damaged naming the file when it is not one."""
    def shape(data: Any) -> handoff.Profile:
        found = _from_json(data)
        if found.vm != vm:  # a file copied under another guest's name
            raise ValueError(f"it is the profile of {found.vm!r}, not of {vm!r}")
        return found
    return statefile.load(path(config, vm), shape, FIX, top=config)


def require(config: str, vm: str) -> handoff.Profile:
    found = load(config, vm)
    if found is None:
        raise NotFound(f"{vm} has no hand-off profile; `pcimgr handoff list` lists them, "
                       f"`pcimgr handoff define {vm} ADDRESS...` makes one")
    return found


def names(config: str) -> list[str]:
    return [n[:-5] for n in statefile.names(config, DIR)
            if n.endswith(".json") and handoff.VM_NAME.fullmatch(n[:-5])]


def load_all(config: str) -> list[handoff.Profile]:
    return [p for p in (load(config, vm) for vm in names(config)) if p is not None]


def save(config: str, profile: handoff.Profile) -> None:
    filechange.change(config, f"the hand-off profile of {profile.vm}",
                      [(path(config, profile.vm), statefile.dumps(profile.to_json()))])


def remove(config: str, vm: str) -> None:
    filechange.change(config, f"the hand-off profile of {vm}", [(path(config, vm), None)])


def owner_of(config: str, address: str, but: str) -> str | None:
    """Another guest whose profile names the function: a function is one guest's to take."""
    for p in load_all(config):
        if p.vm != but and address in p.addresses:
            return p.vm
    return None


def _from_json(data: Any) -> handoff.Profile:
    """A profile file's content, checked field by field (the hook acts on it as root)."""
    statefile.obj(data, format=int, vm=str, addresses=list, group=bool,
                  display_manager=(str, type(None)), framebuffer=bool,
                  hugepages=(dict, type(None)), isolate_cpus=(str, type(None)),
                  driver=(str, type(None)), unload_driver=bool, force=bool)
    if data["format"] != handoff.FORMAT:
        raise ValueError(f"format {data['format']} (this pcimgr reads format {handoff.FORMAT})")
    try:
        handoff.check_vm(data["vm"])
        if data["display_manager"] is not None:
            handoff.check_unit(data["display_manager"])
        if data["isolate_cpus"] is not None:
            handoff.parse_cpus(data["isolate_cpus"])
        if data["driver"] is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}",
                                                           data["driver"]):
            raise BadInput(f"'driver' is {data['driver']!r}, not a driver name")
        addresses = tuple(str(PciAddress.parse(a)) if isinstance(a, str) else "?"
                          for a in data["addresses"])
    except BadInput as e:
        raise ValueError(str(e)) from None
    if not addresses or "?" in addresses or len(addresses) > 64:
        raise ValueError("'addresses' is not a list of one to 64 PCI addresses")
    pages = data["hugepages"]
    if pages is not None:
        statefile.obj(pages, pages=int, size_kb=int)
        if pages["pages"] < 1 or pages["size_kb"] not in handoff.SIZES.values():
            raise ValueError("'hugepages' is not a count of pages of a size Linux offers")
    return handoff.Profile(
        data["vm"], addresses, data["group"], data["display_manager"], data["framebuffer"],
        handoff.Hugepages(pages["pages"], pages["size_kb"]) if pages else None,
        data["isolate_cpus"], data["driver"], data["unload_driver"], data["force"])
