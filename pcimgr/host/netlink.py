"""VF properties and link state on the Linux host, over rtnetlink through `ip` (iproute2),
as `ip link show/set DEV vf N ...` does. The kernel's refusal comes back as an OSError
with its errno, as a direct netlink call would give it."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from typing import Any

from pcimgr.core.errors import KernelError
from pcimgr.core.vfconfig import VfConfig
from pcimgr.host.vfinfo import ip_command


def vf_configs(netdev: str) -> list[VfConfig]:
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
    # iproute2 6.1 prints "vlan_list": [{"vlan": 10, "qos": 3}], or [{}] for none
    vlans = [v for v in vf.get("vlan_list", []) if v] or ([vf] if "vlan" in vf else [])
    return VfConfig(mac=vf.get("address"),
                    vlan=vlans[0].get("vlan", 0) if vlans else 0,
                    qos=vlans[0].get("qos", 0) if vlans else 0,
                    spoofchk=vf.get("spoofchk"), trust=vf.get("trust"),
                    link_state=vf.get("link_state"))


def set_vf(netdev: str, index: int, settings: dict[str, Any]) -> None:
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
    r = subprocess.run(["ip", "link", "set", "dev", netdev, "up" if up else "down"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise KernelError(f"cannot bring {netdev} {'up' if up else 'down'}: {r.stderr.strip()}")
