"""The host's processes and services as a hand-off needs them: who holds a device node open
(and in which systemd unit), a unit's state, stopping and starting it, and the runtime
properties of slices (AllowedCPUs). The Linux side: /proc and systemctl, each call bounded
in time."""

from __future__ import annotations

import os
from typing import NamedTuple

from pcimgr.core.errors import KernelError


class Holder(NamedTuple):
    pid: int
    comm: str
    unit: str | None   # the systemd unit its cgroup says it runs in

    def __str__(self) -> str:
        return f"{self.comm}[{self.pid}]" + (f" ({self.unit})" if self.unit else "")


class UnitState(NamedTuple):
    id: str            # the unit's own name (display-manager.service is an alias: gdm.service)
    active: str        # ActiveState: active, inactive, failed, activating, deactivating
    loaded: bool       # LoadState is loaded: the unit exists

    @property
    def running(self) -> bool:
        return self.active in ("active", "activating", "reloading")


def node_holders(nodes: list[str]) -> dict[str, list[Holder]]:
    """node -> the processes that have it open (/proc/PID/fd), with their units."""
    from pcimgr.host import facts
    wanted = set(nodes)

    def key(fd: str) -> str | None:
        target = os.readlink(fd)
        return target if target in wanted else None
    found: dict[str, list[Holder]] = {}
    for node, who in facts.open_by(key).items():
        for w in who:
            comm, _, pid = w[:-1].rpartition("[")
            found.setdefault(node, []).append(Holder(int(pid), comm, unit_of(pid)))
    return found


def unit_of(pid: str) -> str | None:
    """The service or scope a process runs in, from its cgroup (v2: "0::/system.slice/X")."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        path = line.split(":", 2)[-1]
        for part in reversed(path.split("/")):
            if part.endswith((".service", ".scope")):
                return part
    return None


def has_systemd() -> bool:
    """systemd is the service manager (sd_booted(): /run/systemd/system exists)."""
    return os.path.isdir("/run/systemd/system")


def systemctl(args: list[str], timeout: float) -> str:
    import subprocess
    command = " ".join(["systemctl", *args])
    try:
        r = subprocess.run(["systemctl", *args], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise KernelError(f"`{command}` did not finish within {timeout:.0f} s") from None
    except OSError as e:
        raise KernelError(f"`{command}` could not run ({e})") from e
    if r.returncode != 0:
        said = (r.stderr.strip() or r.stdout.strip()).splitlines()
        raise KernelError(f"`{command}` failed (exit {r.returncode}"
                          + (f": {said[-1]}" if said else "") + ")")
    return r.stdout


def unit_state(unit: str, timeout: float = 10) -> UnitState | None:
    if not has_systemd():
        return None
    out = systemctl(["show", "--property=Id,ActiveState,LoadState", "--", unit], timeout)
    props = dict(line.partition("=")[::2] for line in out.splitlines())
    return UnitState(props.get("Id") or unit, props.get("ActiveState", "unknown"),
                     props.get("LoadState") == "loaded")


def unit_property(unit: str, name: str, timeout: float = 10) -> str:
    return systemctl(["show", f"--property={name}", "--value", "--", unit], timeout).strip()
