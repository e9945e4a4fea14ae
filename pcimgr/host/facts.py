"""The Linux host's facts about its own use of its devices that sysfs does not hold:
interface addresses and routes (a netlink socket, else `ip -j`; /proc/net/ipv6_route), the
interface that reaches a server, mounts (network filesystems among them), swaps, and block devices
open by processes (/proc). The simulated host declares the same facts in its profile
(sim/machine.py); what sysfs holds is read by host/usage.py for both.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from functools import cached_property
from typing import TypeVar

from pcimgr.host.sysfs import Sysfs


class LinuxFacts:
    """Read lazily: a command about a function without interfaces never runs `ip`,
    one without disks never reads /proc/self/mountinfo (each costs a process start
    or a parse, which on a slow host or the emulated lab is felt)."""

    known = True

    def __init__(self, sysfs: Sysfs) -> None:
        self._sysfs = sysfs

    @cached_property
    def _net(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        links, routes4 = _addresses_and_routes()
        addresses: dict[str, list[str]] = {}
        for link in links:
            # the loopback's addresses are no device's business, and the kernel gives
            # every IPv6 interface that is up an fe80:: address whether it is used or not
            cidrs = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                     if a.get("scope") != "host"
                     and not (a.get("family") == "inet6" and a.get("scope") == "link")]
            if cidrs:
                addresses[link["ifname"]] = cidrs
        found: list[tuple[str, str]] = []
        for route in routes4:
            if route.get("type", "unicast") != "unicast" or not route.get("dev"):
                continue
            # the kernel's own routes come with an address, which the address check names
            if route.get("protocol") == "kernel" and route.get("dst") != "default":
                continue
            found.append((route["dev"], route["dst"]))
        routes: dict[str, list[str]] = {}
        for dev, dst in found + _ipv6_routes():
            if dst not in routes.get(dev, ()):  # "default" once, whatever its family or table
                routes.setdefault(dev, []).append(dst)
        return addresses, routes

    @property
    def addresses(self) -> dict[str, list[str]]:
        """ifname -> CIDRs"""
        return self._net[0]

    @property
    def routes(self) -> dict[str, list[str]]:
        """ifname -> destinations ("default" among them)"""
        return self._net[1]

    @cached_property
    def _mountinfo(self) -> tuple[dict[str, str], dict[str, str]]:
        return _mounts(_block_names_by_number(self._sysfs))

    @property
    def mounts(self) -> dict[str, str]:
        """block device name -> mount point"""
        return self._mountinfo[0]

    @property
    def network_mounts(self) -> dict[str, str]:
        """server address -> what is mounted from it ("NFS export 192.0.2.1:/srv on /")"""
        return self._mountinfo[1]

    def route_to(self, server: str) -> str | None:
        """The interface the host reaches an address through (`ip route get`)."""
        if server not in self._routes_to:
            found = _ip_json("route", "get", server)
            self._routes_to[server] = found[0].get("dev") if found else None
        return self._routes_to[server]

    @cached_property
    def _routes_to(self) -> dict[str, str | None]:
        return {}

    @cached_property
    def open_blocks(self) -> dict[str, list[str]]:
        """block device name -> the processes that have it open, as "comm[pid]"."""
        return _open_blocks(_block_names_by_number(self._sysfs))

    @cached_property
    def swaps(self) -> frozenset[str]:
        return _swaps()


def vfio_holders() -> dict[int, list[str]]:
    """IOMMU group -> the processes that have /dev/vfio/<group> open, as "comm[pid]".

    QEMU keeps the group open for as long as it uses a device of the group, and
    the kernel cannot remove such a device (`echo 0 > sriov_numvfs` blocks).
    """
    def group(fd: str) -> int | None:
        target = os.readlink(fd)
        return int(target[10:]) if target.startswith("/dev/vfio/") and target[10:].isdigit() \
            else None
    return open_by(group)


K = TypeVar("K")


def open_by(key: Callable[[str], K | None]) -> dict[K, list[str]]:
    """key -> the processes ("comm[pid]") with an open file for which key(/proc/PID/fd/N)
    names it. Other users' processes are invisible without root; vanished ones skipped."""
    found: dict[K, list[str]] = {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        keys = set()
        for fd in fds:
            try:
                k = key(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if k is not None:
                keys.add(k)
        if not keys:
            continue  # its name is read only when it holds something
        who = f"{_comm(pid)}[{pid}]"
        for k in keys:
            found.setdefault(k, []).append(who)
    return found


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _addresses_and_routes() -> list[list[dict]]:
    """[links with addr_info, routes] as `ip -j` prints them: over a netlink socket (no
    process to start: ~120 ms in the emulated lab, with importing subprocess), or from
    `ip` where the socket cannot be had."""
    from pcimgr.host import netlink
    try:
        return list(netlink.addresses_and_routes())
    except OSError:
        return _ip_batch("addr show", "route show table all")


def _ip_batch(*commands: str) -> list[list[dict]]:
    """Several `ip -j` commands in one process (each start costs milliseconds)."""
    import subprocess
    try:
        out = subprocess.run(["ip", "-j", "-batch", "-"], input="\n".join(commands) + "\n",
                             capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return [[] for _ in commands]
    found: list[list[dict]] = []
    import json  # `ip -json` output only: `list` reads the network over netlink
    decoder, i = json.JSONDecoder(), 0
    while len(found) < len(commands):
        while i < len(out) and out[i].isspace():
            i += 1
        if i >= len(out):
            break
        value, i = decoder.raw_decode(out, i)
        found.append(value)
    return found + [[] for _ in range(len(commands) - len(found))]


_RTF_GATEWAY, _RTF_REJECT = 0x2, 0x200


def _ipv6_routes() -> list[tuple[str, str]]:
    """(device, destination) of the IPv6 routes that show use: the default route and routes
    through a gateway, in every table (/proc/net/ipv6_route; `ip -6` cannot join a batch).
    The prefix routes the kernel adds for an address are left to the address check."""
    found = []
    try:
        with open("/proc/net/ipv6_route") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 10 or fields[9] == "lo":
                    continue
                flags, length = int(fields[8], 16), int(fields[1], 16)
                if flags & _RTF_REJECT:
                    continue
                if length == 0 and int(fields[0], 16) == 0:
                    found.append((fields[9], "default"))
                elif flags & _RTF_GATEWAY:
                    found.append((fields[9], f"{_ipv6(fields[0])}/{length}"))
    except (OSError, ValueError):
        pass
    return found


def _ipv6(hex32: str) -> str:
    import ipaddress
    return str(ipaddress.IPv6Address(bytes.fromhex(hex32)))


def _ip_json(*args: str) -> list[dict]:
    import subprocess
    try:
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    import json
    return json.loads(out or "[]")


def _block_names_by_number(sysfs: Sysfs) -> dict[str, str]:
    names = {}
    for name in sysfs.list_dir("class/block"):
        number = sysfs.read_attr(f"class/block/{name}/dev")
        if number:
            names[number] = name
    return names


# Filesystems whose device is a server: mountinfo's super options name its address.
_NETWORK_FS = {"nfs": "NFS", "nfs4": "NFS", "cifs": "SMB", "smb3": "SMB", "ceph": "Ceph",
               "glusterfs": "GlusterFS", "fuse.glusterfs": "GlusterFS", "9p": "9P"}


def _mounts(names: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    mounts: dict[str, str] = {}
    network: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                name = names.get(fields[2])
                if name is not None:
                    mounts.setdefault(name, fields[4])
                    continue
                # after the " - " separator: fstype, source, super options
                rest = fields[fields.index("-") + 1:] if "-" in fields else []
                if len(rest) >= 3 and rest[0] in _NETWORK_FS:
                    server = _server(rest[1], rest[2])
                    if server:
                        root = " (the root filesystem)" if fields[4] == "/" else ""
                        network.setdefault(server, f"{_NETWORK_FS[rest[0]]} {rest[1]} on "
                                                   f"{fields[4]}{root}")
    except (OSError, ValueError):
        pass
    return mounts, network


def _server(source: str, options: str) -> str | None:
    for option in options.split(","):
        if option.startswith("addr="):
            return option[5:]
    host = source.lstrip("/").split(":", 1)[0].split("/", 1)[0].strip("[]")
    return host if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", host) else None


def _open_blocks(names: dict[str, str]) -> dict[str, list[str]]:
    """A /proc/*/fd scan for block device nodes (a raw disk a guest or a tool holds open)."""
    by_rdev = {}
    for number, name in names.items():
        major, _, minor = number.partition(":")
        if major.isdigit() and minor.isdigit():
            by_rdev[os.makedev(int(major), int(minor))] = name
    def block(fd: str) -> str | None:
        st = os.stat(fd)
        return by_rdev.get(st.st_rdev) if stat.S_ISBLK(st.st_mode) else None
    return open_by(block)


def _swaps() -> frozenset[str]:
    try:
        with open("/proc/swaps") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return frozenset()
    return frozenset(os.path.basename(os.path.realpath(line.split()[0]))
                     for line in lines if line.startswith("/dev/"))
