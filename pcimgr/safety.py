"""Why a function must not leave its host driver: the refusals of detach, unbind and bind."""

from __future__ import annotations

from dataclasses import dataclass

from pcimgr import hoststate
from pcimgr.hoststate import HostState
from pcimgr.model import Host, PciDevice
from pcimgr.sysfs import Sysfs
from pcimgr.viability import VFIO_DRIVERS

# Functions a running host needs whatever the user asks (class >> 8).
CHIPSET = {0x0600: "host bridge", 0x0601: "ISA/LPC bridge", 0x0C05: "SMBus controller"}


@dataclass(frozen=True)
class Concern:
    address: str
    reason: str
    forceable: bool = True


def concerns(sysfs: Sysfs, host: Host, targets: list[PciDevice], state: HostState) -> list[Concern]:
    found: list[Concern] = []
    for d in targets:
        a = str(d.address)
        chipset = CHIPSET.get(d.class_code >> 8)
        if chipset:
            found.append(Concern(a, f"it is the chipset's {chipset}, which the host needs",
                                 forceable=False))
        for ifname in d.netdevs:
            found += _network(a, ifname, state)
        for block in hoststate.block_devices(sysfs, a):
            found += _storage(sysfs, a, block, state)
        if d.sriov is not None:
            held = [str(vf.address) for vf in (host.get(v) for v in d.sriov.vfs)
                    if vf is not None and vf.driver in VFIO_DRIVERS]
            if held:
                found.append(Concern(a, f"its VFs {', '.join(held)} are on vfio-pci, and "
                                        "unbinding the PF driver destroys them"))
        if sysfs.read_attr(f"bus/pci/devices/{a}/boot_vga") == "1":
            found.append(Concern(a, "it is the boot display"))
    return found


def _network(address: str, ifname: str, state: HostState) -> list[Concern]:
    found = []
    if state.addresses.get(ifname):
        found.append(Concern(address, f"interface {ifname} has address "
                                      f"{', '.join(state.addresses[ifname])}"))
    routes = state.routes.get(ifname, [])
    if "default" in routes:
        found.append(Concern(address, f"interface {ifname} carries the default route"))
    elif routes:
        found.append(Concern(address, f"interface {ifname} carries routes to {', '.join(routes)}"))
    if ifname in state.masters:
        found.append(Concern(address, f"interface {ifname} is enslaved to {state.masters[ifname]}"))
    return found


def _storage(sysfs: Sysfs, address: str, block: str, state: HostState) -> list[Concern]:
    found = []
    if block in state.mounts:
        where = state.mounts[block]
        found.append(Concern(address, f"block device {block} is mounted on {where}"
                                      + (" (the root filesystem)" if where == "/" else "")))
    if block in state.swaps:
        found.append(Concern(address, f"block device {block} is used as swap"))
    users = hoststate.holders(sysfs, block)
    if users:
        found.append(Concern(address, f"block device {block} is held by {', '.join(users)}"))
    return found
