"""VF properties held by the PF's driver (MAC, VLAN, trust, spoof check, link state).

They live in the PF's netdev and are read and set over rtnetlink, here through
`ip` (iproute2), as `ip link show/set DEV vf N ...` does; a simulated host keeps
them in its simulated kernel. Also the PF's link state, which decides whether new
VFs get a carrier.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import time
from typing import Any

from pcimgr.core.errors import BadInput, KernelError
from pcimgr.host.sysfs import Sysfs

IFF_UP = 0x1
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_RETRY_PAUSE = 0.2


def check_mac(text: str) -> str:
    mac = text.lower()
    if not _MAC.fullmatch(mac):
        raise BadInput(f"not a MAC address: {text!r}; write six hex octets, e.g. 52:54:00:6b:3c:01")
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise BadInput(f"{text} is a multicast or zero address; a VF needs a unicast MAC "
                       "(first octet even, e.g. 52:54:00:...)")
    return mac


def read(sysfs: Sysfs, pf: str, netdev: str | None) -> list[dict[str, Any]]:
    """One dict per VF index (mac, vlan, qos, spoofchk, trust, link_state); empty when the
    PF has no netdev to ask."""
    if netdev is None:
        return []
    if sysfs.simulated:
        return sysfs.kernel().vf_configs(pf)
    try:
        out = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", netdev],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0 or not out.stdout.strip():
        return []
    links = json.loads(out.stdout)
    return [_from_ip(vf) for vf in (links[0].get("vfinfo_list", []) if links else [])]


def _from_ip(vf: dict[str, Any]) -> dict[str, Any]:
    # iproute2 6.1 prints "vlan_list": [{"vlan": 10, "qos": 3}], or [{}] for none
    vlans = [v for v in vf.get("vlan_list", []) if v] or ([vf] if "vlan" in vf else [])
    return {
        "mac": vf.get("address"),
        "vlan": vlans[0].get("vlan", 0) if vlans else 0,
        "qos": vlans[0].get("qos", 0) if vlans else 0,
        "spoofchk": vf.get("spoofchk"),
        "trust": vf.get("trust"),
        "link_state": vf.get("link_state"),
    }


def configure(sysfs: Sysfs, pf: str, netdev: str, index: int, settings: dict[str, Any],
              timeout: float) -> None:
    """Set some of read()'s keys on VF `index`, retrying while the driver says the VF is in reset."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if sysfs.simulated:
                sysfs.kernel().set_vf(pf, index, settings)
            else:
                _ip_set(netdev, index, settings)
            return
        except OSError as e:
            if e.errno == errno.EAGAIN and time.monotonic() < deadline:
                time.sleep(_RETRY_PAUSE)
                continue
            why = ("the VF is still in reset after "
                   f"{timeout:g} s" if e.errno == errno.EAGAIN else
                   "the PF driver does not support it" if e.errno == errno.EOPNOTSUPP else
                   e.strerror or str(e))
            raise KernelError(f"cannot set {describe(settings)} on VF {index} of {netdev}: "
                              f"{why}", e.errno) from e


def ip_command(netdev: str, index: int, settings: dict[str, Any]) -> list[str]:
    args = ["ip", "link", "set", "dev", netdev, "vf", str(index)]
    if "mac" in settings:
        args += ["mac", settings["mac"]]
    if "vlan" in settings:
        args += ["vlan", str(settings["vlan"]), "qos", str(settings.get("qos", 0))]
    for key in ("spoofchk", "trust"):
        if key in settings:
            args += [key, "on" if settings[key] else "off"]
    if "link_state" in settings:
        args += ["state", settings["link_state"]]
    return args


def describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_show(v)}" for k, v in settings.items())


def _show(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def _ip_set(netdev: str, index: int, settings: dict[str, Any]) -> None:
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


def link_is_up(sysfs: Sysfs, pf: str, netdev: str) -> bool:
    flags = sysfs.read_attr(f"bus/pci/devices/{pf}/net/{netdev}/flags")
    return flags is not None and bool(int(flags, 16) & IFF_UP)


def set_link(sysfs: Sysfs, pf: str, netdev: str, up: bool) -> None:
    if sysfs.simulated:
        sysfs.kernel().set_link(pf, netdev, up)
        return
    r = subprocess.run(["ip", "link", "set", "dev", netdev, "up" if up else "down"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise KernelError(f"cannot bring {netdev} {'up' if up else 'down'}: {r.stderr.strip()}")
