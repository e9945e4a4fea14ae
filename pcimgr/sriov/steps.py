"""Plan steps for SR-IOV: the VF count, the autoprobe switch, VF properties, the PF's link.

Each step records what it replaces, so undo() (rollback, or recovery of a killed
run from the journal) puts the PF back as it was: the previous count with each
VF on its previous driver and with its previous MAC/VLAN/trust settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pcimgr.core.errors import KernelError
from pcimgr.core.vfconfig import VfConfig
from pcimgr.drivers.binding import current_driver, move
from pcimgr.host import vfinfo
from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import Sysfs, device_path
from pcimgr.host.uevents import Watcher
from pcimgr.plans.step import StepBase, register

DEVICES = "/sys/bus/pci/devices"


def numvfs(sysfs: Sysfs, pf: str) -> int:
    return int(sysfs.read_attr(device_path(pf, "sriov_numvfs")) or 0)


def vf_links(sysfs: Sysfs, pf: str) -> list[str]:
    """The VFs' addresses through the PF's virtfnN links, in index order."""
    found = []
    for name in sysfs.list_dir(device_path(pf)):
        if name.startswith("virtfn") and name[6:].isdigit():
            target = sysfs.read_link(device_path(pf, name))
            if target and sysfs.exists(device_path(target.rsplit("/", 1)[-1])):
                found.append((int(name[6:]), target.rsplit("/", 1)[-1]))
    return [a for _, a in sorted(found)]


def set_count(machine: Machine, pf: str, count: int, timeout: float, wait_drivers: bool,
              expect: tuple[str, ...] = ()) -> None:
    """Write sriov_numvfs and wait until exactly `count` VFs are there (and bound, if asked)."""
    sysfs = machine.sysfs
    with Watcher(machine) as watcher:
        sysfs.write_attr(device_path(pf, "sriov_numvfs"), str(count))
        if not watcher.wait(lambda: len(vf_links(sysfs, pf)) == count, timeout,
                            f"{count} VF(s) of {pf} to appear"):
            raise KernelError(f"{pf}: {len(vf_links(sysfs, pf))} of {count} VFs are there "
                              f"{timeout:g} s after writing sriov_numvfs; see `dmesg` "
                              "(or give --timeout more time)")
        found = tuple(vf_links(sysfs, pf))
        if expect and found != expect:
            raise KernelError(f"{pf}: the VFs appeared at {', '.join(found)}, not at "
                              f"{', '.join(expect)} as sriov_offset/sriov_stride promised")
        if wait_drivers:
            # the native VF driver may be missing: the caller reports unbound VFs
            watcher.wait(lambda: all(current_driver(sysfs, a) for a in found), timeout,
                         f"the VFs of {pf} to get their drivers")


@register
@dataclass(frozen=True)
class SetAutoprobe(StepBase):
    address: str  # the PF
    value: bool
    original: bool
    kind: str = "autoprobe"

    def summary(self) -> str:
        return f"{self.address}: sriov_drivers_autoprobe {int(self.original)} -> {int(self.value)}"

    def describe(self) -> list[str]:
        return [f"echo {int(self.value)} > {DEVICES}/{self.address}/sriov_drivers_autoprobe"]

    def apply(self, machine: Machine) -> None:
        machine.sysfs.write_attr(device_path(self.address, "sriov_drivers_autoprobe"),
                         str(int(self.value)))

    def undo(self, machine: Machine) -> None:
        machine.sysfs.write_attr(device_path(self.address, "sriov_drivers_autoprobe"),
                         str(int(self.original)))

    def undo_describe(self) -> list[str]:
        return [f"echo {int(self.original)} > {DEVICES}/{self.address}/sriov_drivers_autoprobe"]


@register
@dataclass(frozen=True)
class SetNumVfs(StepBase):
    """Change the VF count (one of them zero: the kernel refuses N -> M with EBUSY).

    original_vfs: per VF of the original count, its address, driver, override and
    properties (as vfinfo.read gives them), so that undo can rebuild them.
    """

    address: str  # the PF
    count: int
    original: int
    original_vfs: tuple[dict[str, Any], ...]
    netdev: str | None  # the PF's, through which VF properties are restored
    timeout: float
    wait_drivers: bool
    expect: tuple[str, ...] = ()  # the VF addresses the count should create
    kind: str = "numvfs"

    def summary(self) -> str:
        if self.count == 0:
            return f"{self.address}: remove its {self.original} VF(s)"
        return f"{self.address}: create {self.count} VF(s)" + (
            f" ({', '.join(self.expect)})" if self.expect else "")

    def describe(self) -> list[str]:
        line = f"echo {self.count} > {DEVICES}/{self.address}/sriov_numvfs"
        wait = ("   # then wait for the virtfnN links" + (" and the VF drivers"
                if self.wait_drivers else "") + f" (up to {self.timeout:g} s)")
        return [line + (wait if self.count else "")]

    def apply(self, machine: Machine) -> None:
        set_count(machine, self.address, self.count, self.timeout, self.wait_drivers, self.expect)

    def undo(self, machine: Machine) -> None:
        current = numvfs(machine.sysfs, self.address)
        if current != self.original:
            if current:
                set_count(machine, self.address, 0, self.timeout, False)
            if self.original:
                set_count(machine, self.address, self.original, self.timeout, False)
        for index, vf in enumerate(self.original_vfs):
            move(machine, vf["address"], vf["driver"], vf["override"])
            _restore_config(machine, self.address, self.netdev, index, vf.get("config"),
                            self.timeout)

    def undo_moves(self) -> tuple[tuple[str, str | None], ...]:
        return tuple((vf["address"], vf["driver"]) for vf in self.original_vfs)

    def undo_removes(self) -> tuple[str, ...]:
        return (self.address,)

    def undo_netdevs(self) -> tuple[tuple[str, str, bool], ...]:
        return () if self.netdev is None else ((self.address, self.netdev, False),)

    def undo_describe(self) -> list[str]:
        lines = [f"echo 0 > {DEVICES}/{self.address}/sriov_numvfs   # unless it has "
                 f"{self.original} VF(s) now"]
        if self.original:
            lines.append(f"echo {self.original} > {DEVICES}/{self.address}/sriov_numvfs")
        for vf in self.original_vfs:
            lines.append(f"# then {vf['address']} back on {vf['driver'] or 'no driver'}"
                         + (f" with its settings through {self.netdev}" if self.netdev else ""))
        return lines

    def voids(self) -> tuple[str, ...]:
        return tuple(vf["address"] for vf in self.original_vfs) + self.expect

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SetNumVfs:
        return cls(**(data | {"original_vfs": tuple(data["original_vfs"]),
                              "expect": tuple(data["expect"])}))


def _restore_config(machine: Machine, pf: str, netdev: str | None, index: int,
                    config: dict[str, Any] | None, timeout: float) -> None:
    if not config or netdev is None:
        return
    now = vfinfo.read(machine, pf, netdev)
    current = now[index] if index < len(now) else VfConfig()
    changed = {k: v for k, v in config.items() if v is not None and current.get(k) != v}
    if "vlan" in changed or "qos" in changed:  # ip sets them together
        changed |= {"vlan": config.get("vlan", 0), "qos": config.get("qos", 0)}
    if changed:
        vfinfo.configure(machine, pf, netdev, index, changed, timeout)


@register
@dataclass(frozen=True)
class ConfigureVf(StepBase):
    address: str  # the PF
    netdev: str
    index: int
    settings: dict[str, Any]
    original: dict[str, Any]
    timeout: float
    kind: str = "vfconfig"

    def summary(self) -> str:
        return f"{self.address}: VF {self.index}: {vfinfo.describe(self.settings)}"

    def describe(self) -> list[str]:
        return [" ".join(vfinfo.ip_command(self.netdev, self.index, self.settings))
                + f"   # retried up to {self.timeout:g} s while the VF is in reset"]

    def apply(self, machine: Machine) -> None:
        vfinfo.configure(machine, self.address, self.netdev, self.index, self.settings,
                         self.timeout)

    def undo(self, machine: Machine) -> None:
        _restore_config(machine, self.address, self.netdev, self.index, self.original,
                        self.timeout)

    def undo_netdevs(self) -> tuple[tuple[str, str, bool], ...]:
        return ((self.address, self.netdev, False),)

    def undo_describe(self) -> list[str]:
        wanted = {k: v for k, v in self.original.items() if v is not None}
        return [" ".join(vfinfo.ip_command(self.netdev, self.index, wanted))
                + "   # the settings that differ now"]


@register
@dataclass(frozen=True)
class SetLink(StepBase):
    """Bring the PF's interface up, so that new VFs get a carrier (igb)."""

    address: str
    netdev: str
    up: bool
    kind: str = "link"

    def summary(self) -> str:
        return f"{self.address}: interface {self.netdev} {'up' if self.up else 'down'}"

    def describe(self) -> list[str]:
        return [f"ip link set dev {self.netdev} {'up' if self.up else 'down'}"]

    def apply(self, machine: Machine) -> None:
        vfinfo.set_link(machine, self.address, self.netdev, self.up)

    def undo(self, machine: Machine) -> None:
        vfinfo.set_link(machine, self.address, self.netdev, not self.up)

    def undo_netdevs(self) -> tuple[tuple[str, str, bool], ...]:
        return ((self.address, self.netdev, self.up),)

    def undo_describe(self) -> list[str]:
        return [f"ip link set dev {self.netdev} {'down' if self.up else 'up'}"]
