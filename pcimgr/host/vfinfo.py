"""VF properties held by the PF's driver (MAC, VLAN, trust, spoof check, link state).

They live in the PF's netdev; the machine reads and sets them (the Linux host over
rtnetlink through `ip`, host/netlink.py; a simulated host in its simulated
kernel). Here: the rules around them (MAC syntax, retries while a VF is in reset,
how a change reads) and the PF's link state, which decides whether new VFs get a
carrier.
"""

from __future__ import annotations

import errno
import re
import time
from typing import TYPE_CHECKING, Any

from pcimgr.core.errors import BadInput, KernelError
from pcimgr.core.vfconfig import VfConfig
from pcimgr.host.sysfs import Sysfs, device_path
from pcimgr.host.waiting import Patience

if TYPE_CHECKING:
    from pcimgr.host.machine import Machine

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


def qos_without_vlan(settings: dict[str, Any]) -> bool:
    """The 802.1p priority belongs to a port VLAN: `ip ... vf N qos` only follows `vlan`."""
    return "qos" in settings and "vlan" not in settings


def read(machine: Machine, pf: str, netdev: str | None) -> list[VfConfig]:
    """One per VF index; empty when the PF has no netdev to ask."""
    return [] if netdev is None else machine.vf_configs(pf, netdev)


def configure(machine: Machine, pf: str, netdev: str, index: int, settings: dict[str, Any],
              timeout: float) -> None:
    """Set some of read()'s keys on VF `index`, retrying while the driver says the VF is
    in reset."""
    deadline = time.monotonic() + timeout
    patience = Patience(f"VF {index} of {netdev} to leave reset")
    while True:
        try:
            machine.set_vf(pf, netdev, index, settings)
            return
        except OSError as e:
            if e.errno == errno.EAGAIN and time.monotonic() < deadline:
                patience.tick()
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


def link_is_up(sysfs: Sysfs, pf: str, netdev: str) -> bool:
    flags = sysfs.read_attr(device_path(pf, "net", netdev, "flags"))
    return flags is not None and bool(int(flags, 16) & IFF_UP)


def set_link(machine: Machine, pf: str, netdev: str, up: bool) -> None:
    machine.set_link(pf, netdev, up)
