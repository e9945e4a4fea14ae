"""What the host uses a function for: interface addresses, routes and masters, mounted or
swapped block devices and their holders.

A real host answers through `ip -j` (netlink) and /proc; a simulated host
declares the same facts in its profile. Block devices and holders are sysfs
for both.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from pcimgr.sysfs import Sysfs


@dataclass(frozen=True)
class HostState:
    addresses: dict[str, list[str]]   # ifname -> CIDRs
    routes: dict[str, list[str]]      # ifname -> destinations ("default" among them)
    masters: dict[str, str]           # ifname -> bond/bridge/team it is enslaved to
    mounts: dict[str, str]            # block device name -> mount point
    swaps: frozenset[str]             # block device names used as swap


def read(sysfs: Sysfs) -> HostState:
    if sysfs.simulated:
        from pcimgr.sim.tree import marker
        facts = marker(sysfs.root).get("host", {})
        return HostState(facts.get("addresses", {}), facts.get("routes", {}),
                         facts.get("masters", {}), facts.get("mounts", {}),
                         frozenset(facts.get("swaps", ())))
    addresses: dict[str, list[str]] = {}
    masters: dict[str, str] = {}
    for link in _ip_json("addr", "show"):
        cidrs = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])]
        if cidrs:
            addresses[link["ifname"]] = cidrs
        if link.get("master"):
            masters[link["ifname"]] = link["master"]
    routes: dict[str, list[str]] = {}
    for route in _ip_json("route", "show", "table", "all"):
        # local/broadcast entries exist for every address; the address check covers them
        if route.get("type", "unicast") == "unicast" and route.get("dev"):
            routes.setdefault(route["dev"], []).append(route["dst"])
    names = _block_names_by_number(sysfs)
    return HostState(addresses, routes, masters, _mounts(names), _swaps())


def block_devices(sysfs: Sysfs, address: str) -> list[str]:
    """Disks and partitions whose device lies below the function (class/block links)."""
    below = sysfs.resolve(f"bus/pci/devices/{address}") + os.sep
    return [name for name in sysfs.list_dir("class/block")
            if sysfs.resolve(f"class/block/{name}").startswith(below)]


def holders(sysfs: Sysfs, block: str) -> list[str]:
    """dm, md or LVM devices built on a block device."""
    return sysfs.list_dir(f"class/block/{block}/holders")


def _ip_json(*args: str) -> list[dict]:
    try:
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return json.loads(out or "[]")


def _block_names_by_number(sysfs: Sysfs) -> dict[str, str]:
    names = {}
    for name in sysfs.list_dir("class/block"):
        number = sysfs.read_attr(f"class/block/{name}/dev")
        if number:
            names[number] = name
    return names


def _mounts(names: dict[str, str]) -> dict[str, str]:
    mounts: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                name = names.get(fields[2])
                if name is not None:
                    mounts.setdefault(name, fields[4])
    except OSError:
        pass
    return mounts


def _swaps() -> frozenset[str]:
    try:
        with open("/proc/swaps") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return frozenset()
    return frozenset(os.path.basename(os.path.realpath(line.split()[0]))
                     for line in lines if line.startswith("/dev/"))
