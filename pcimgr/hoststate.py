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
from functools import cached_property

from pcimgr.sysfs import Sysfs


class HostState:
    """Read lazily: a command about a function without interfaces never runs `ip`,
    one without disks never reads /proc/self/mountinfo (each costs a process start
    or a parse, which on a slow host or the emulated lab is felt)."""

    def __init__(self, sysfs: Sysfs) -> None:
        self._sysfs = sysfs

    @cached_property
    def _facts(self) -> dict:
        return _sim_facts(self._sysfs)

    @cached_property
    def _net(self) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, str]]:
        if self._sysfs.simulated:
            f = self._facts
            return f.get("addresses", {}), f.get("routes", {}), f.get("masters", {})
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
        return addresses, routes, masters

    @property
    def addresses(self) -> dict[str, list[str]]:
        """ifname -> CIDRs"""
        return self._net[0]

    @property
    def routes(self) -> dict[str, list[str]]:
        """ifname -> destinations ("default" among them)"""
        return self._net[1]

    @property
    def masters(self) -> dict[str, str]:
        """ifname -> the bond, bridge or team it is enslaved to"""
        return self._net[2]

    @cached_property
    def mounts(self) -> dict[str, str]:
        """block device name -> mount point"""
        if self._sysfs.simulated:
            return self._facts.get("mounts", {})
        return _mounts(_block_names_by_number(self._sysfs))

    @cached_property
    def swaps(self) -> frozenset[str]:
        if self._sysfs.simulated:
            return frozenset(self._facts.get("swaps", ()))
        return _swaps()


def read(sysfs: Sysfs) -> HostState:
    return HostState(sysfs)


def kernel_cmdline(sysfs: Sysfs) -> str:
    if sysfs.simulated:
        return _sim_facts(sysfs).get("cmdline", "")
    try:
        with open("/proc/cmdline") as f:
            return f.read().strip()
    except OSError:
        return ""


def interrupt_remapping(sysfs: Sysfs) -> bool:
    """Whether MSIs go through the IOMMU's remapping: its irqchips are named IR-*."""
    if sysfs.simulated:
        return bool(_sim_facts(sysfs).get("interrupt_remapping"))
    try:
        with open("/proc/interrupts") as f:
            return any(" IR-" in line for line in f)
    except OSError:
        return False


def module_available(sysfs: Sysfs, name: str) -> bool:
    """Loaded, built in (both show under /sys/module) or installed for the running kernel."""
    if sysfs.simulated:
        return name in _sim_facts(sysfs).get("modules", [])
    if sysfs.exists(f"module/{name.replace('-', '_')}"):
        return True
    try:
        with open(f"/lib/modules/{os.uname().release}/modules.dep") as f:
            wanted = (f"/{name}.ko", f"/{name.replace('-', '_')}.ko")
            return any(any(w in line.split(":", 1)[0] for w in wanted) for line in f)
    except OSError:
        return False


def _sim_facts(sysfs: Sysfs) -> dict:
    from pcimgr.sim.tree import marker
    return marker(sysfs.root).get("host", {})


def vfio_holders(sysfs: Sysfs) -> dict[int, list[str]]:
    """IOMMU group -> the processes that have /dev/vfio/<group> open, as "comm[pid]".

    QEMU keeps the group open for as long as it uses a device of the group, and
    the kernel cannot remove such a device (`echo 0 > sriov_numvfs` blocks).
    """
    if sysfs.simulated:
        return sysfs.kernel().vfio_holders()
    found: dict[int, list[str]] = {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or another user's process without root
        groups = set()
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("/dev/vfio/") and target[10:].isdigit():
                groups.add(int(target[10:]))
        if groups:
            who = f"{_comm(pid)}[{pid}]"
            for g in groups:
                found.setdefault(g, []).append(who)
    return found


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


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
