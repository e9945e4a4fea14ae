"""rtnetlink on the Linux host. The host's addresses and routes are read over a netlink
socket (two dumps, as `ip -j addr show` and `ip -j route show table all` make them, in the
same shape: no process to start). VF properties and link state go through `ip`
(iproute2), as `ip link show/set DEV vf N ...` does; the kernel's refusal comes back as an
OSError with its errno, as a direct netlink call would give it."""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING, Any

from pcimgr.core.errors import KernelError

if TYPE_CHECKING:
    from pcimgr.core.vfconfig import VfConfig

# linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h
_NETLINK_ROUTE = 0
_RTM_GETADDR, _RTM_GETROUTE = 22, 26
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_HEADER = struct.Struct("=IHHII")        # nlmsghdr: length, type, flags, seq, pid
_ATTR = struct.Struct("=HH")             # rtattr: length, type
_IFADDRMSG = struct.Struct("=BBBBI")     # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")     # family, dst_len, src_len, tos, table, protocol,
                                         # scope, type, flags
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_DST, _RTA_OIF = 1, 4
_RTM_F_CLONED = 0x200
_AF_INET, _AF_INET6 = 2, 10
_FAMILIES = {_AF_INET: "inet", _AF_INET6: "inet6"}
_HOST_LENGTH = {_AF_INET: 32, _AF_INET6: 128}
# iproute2's names (lib/rt_names.c, lib/utils.c); others print as numbers
_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
          6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
_PROTOCOLS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static"}


def addresses_and_routes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What `ip -j addr show` and `ip -j route show table all` print, with the fields pcimgr
    reads: links with an "ifname" and "addr_info" (family, local, prefixlen, scope), in the
    kernel's link order; routes with "dst", "dev", "protocol" and "type" (kernel order,
    cloned routes left out as `ip` leaves them). IPv4 and IPv6 only. OSError when there is
    no netlink socket (the caller then asks `ip`)."""
    # _socket, not socket: the module's enum classes cost ~50 ms at start in the lab
    import _socket
    names = _socket.if_nameindex()
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                          _NETLINK_ROUTE)
    try:
        sock.settimeout(10)
        raw_addresses = _dump(sock, _RTM_GETADDR, _IFADDRMSG.pack(0, 0, 0, 0, 0), 1)
        raw_routes = _dump(sock, _RTM_GETROUTE, _RTMSG.pack(0, 0, 0, 0, 0, 0, 0, 0, 0), 2)
    finally:
        sock.close()
    by_index: dict[int, list[dict[str, Any]]] = {}
    for body in raw_addresses:
        family, prefixlen, _, scope, index = _IFADDRMSG.unpack_from(body)
        if family not in _FAMILIES:
            continue
        attrs = _attributes(body, _IFADDRMSG.size)
        local = attrs.get(_IFA_LOCAL, attrs.get(_IFA_ADDRESS))
        if local is None:
            continue
        by_index.setdefault(index, []).append({
            "family": _FAMILIES[family], "local": _socket.inet_ntop(family, local),
            "prefixlen": prefixlen, "scope": _SCOPES.get(scope, str(scope))})
    links = [{"ifindex": index, "ifname": name, "addr_info": by_index[index]}
             for index, name in names if index in by_index]
    ifnames = dict(names)
    routes = []
    for body in raw_routes:
        family, dst_len, _, _, _, protocol, _, kind, flags = _RTMSG.unpack_from(body)
        if family not in _FAMILIES or flags & _RTM_F_CLONED:
            continue
        attrs = _attributes(body, _RTMSG.size)
        route: dict[str, Any] = {"type": _TYPES.get(kind, str(kind)),
                                 "dst": _destination(family, dst_len, attrs.get(_RTA_DST))}
        oif = attrs.get(_RTA_OIF)
        dev = ifnames.get(struct.unpack_from("=I", oif)[0]) if oif and len(oif) >= 4 else None
        if dev is not None:  # none on a multipath route (its next hops carry theirs)
            route["dev"] = dev
        route["protocol"] = _PROTOCOLS.get(protocol, str(protocol))
        routes.append(route)
    return links, routes


def _destination(family: int, length: int, dst: bytes | None) -> str:
    """As iproute2 prints it: "default", the address alone for a host route, else a prefix."""
    import _socket
    if dst is None:
        return "default" if length == 0 else f"0/{length}"
    text = _socket.inet_ntop(family, dst)
    return text if length == _HOST_LENGTH[family] else f"{text}/{length}"


def _dump(sock: Any, kind: int, body: bytes, seq: int) -> list[bytes]:
    """The bodies of one dump's messages; OSError with the kernel's errno if it refuses."""
    sock.sendto(_HEADER.pack(_HEADER.size + len(body), kind, _NLM_F_REQUEST | _NLM_F_DUMP,
                             seq, 0) + body, (0, 0))
    found: list[bytes] = []
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise OSError(errno.EIO, "netlink: the dump ended without NLMSG_DONE")
        at = 0
        while at + _HEADER.size <= len(data):
            length, mtype, _, mseq, _ = _HEADER.unpack_from(data, at)
            if length < _HEADER.size:
                raise OSError(errno.EIO, "netlink: a message shorter than its header")
            if mseq == seq:
                if mtype == _NLMSG_DONE:
                    return found
                if mtype == _NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, at + _HEADER.size)[0]
                    if code:
                        raise OSError(code, f"netlink: {os.strerror(code)}")
                else:
                    found.append(data[at + _HEADER.size:at + length])
            at += (length + 3) & ~3


def _attributes(body: bytes, start: int) -> dict[int, bytes]:
    """rtattr type -> payload; the first of each type, as iproute2's parse_rtattr keeps."""
    found: dict[int, bytes] = {}
    at = (start + 3) & ~3
    while at + _ATTR.size <= len(body):
        length, kind = _ATTR.unpack_from(body, at)
        if length < _ATTR.size:
            break
        found.setdefault(kind & 0x3FFF, body[at + _ATTR.size:at + length])  # no NLA_F_ flags
        at += (length + 3) & ~3
    return found


def vf_configs(netdev: str) -> list[VfConfig]:
    import json
    import subprocess
    try:
        out = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", netdev],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0 or not out.stdout.strip():
        return []
    links = json.loads(out.stdout)
    return [_from_ip(vf) for vf in (links[0].get("vfinfo_list", []) if links else [])]


def _from_ip(vf: dict[str, Any]) -> VfConfig:
    from pcimgr.core.vfconfig import VfConfig
    # iproute2 6.1 prints "vlan_list": [{"vlan": 10, "qos": 3}], or [{}] for none
    vlans = [v for v in vf.get("vlan_list", []) if v] or ([vf] if "vlan" in vf else [])
    return VfConfig(mac=vf.get("address"),
                    vlan=vlans[0].get("vlan", 0) if vlans else 0,
                    qos=vlans[0].get("qos", 0) if vlans else 0,
                    spoofchk=vf.get("spoofchk"), trust=vf.get("trust"),
                    link_state=vf.get("link_state"))


def set_vf(netdev: str, index: int, settings: dict[str, Any]) -> None:
    import subprocess

    from pcimgr.host.vfinfo import ip_command
    try:
        r = subprocess.run(ip_command(netdev, index, settings), capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise OSError(errno.EIO, f"ip failed: {e}") from e
    if r.returncode != 0:
        raise OSError(_errno_of(r.stderr), r.stderr.strip().splitlines()[-1] if r.stderr.strip()
                      else f"ip exited with {r.returncode}")


def _errno_of(stderr: str) -> int:
    """`RTNETLINK answers: <strerror>` carries the kernel's errno as text."""
    for code in (errno.EAGAIN, errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV, errno.EPERM,
                 errno.EBUSY):
        if os.strerror(code) in stderr:
            return code
    return errno.EIO


def set_link(netdev: str, up: bool) -> None:
    import subprocess
    r = subprocess.run(["ip", "link", "set", "dev", netdev, "up" if up else "down"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise KernelError(f"cannot bring {netdev} {'up' if up else 'down'}: {r.stderr.strip()}")
