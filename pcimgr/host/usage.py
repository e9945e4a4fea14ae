"""What the host itself uses each PCI function for: the survey behind every safety refusal.

It works from the dependency towards the function, never the other way round:
an interface or a block device the host uses is followed down its stack (bond,
bridge, team, VLAN, macvlan and OVS `lower_*` links; dm/md `slaves`; a
partition's disk) to the devices that carry it, and each of those up its sysfs
path to the nearest PCI function. So a NIC behind virtio (`<fn>/virtio2/net/`),
a USB NIC several levels below an xHCI controller, a disk below a SCSI host,
and an NVMe namespace that lives under a virtual `nvme-subsystem` (native
multipath) are all found, at any depth. Network disks (iSCSI) and network
filesystems (NFS and friends) lead to the interface that reaches their server.

Only the sysfs layer is read here; the facts sysfs does not hold (addresses,
routes, mounts, swaps, open files, the route to a server) come from the machine's
Facts (host/machine.py): the Linux host's or the simulated host's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput

if TYPE_CHECKING:
    from pcimgr.host.machine import Facts, Machine
from pcimgr.host.sysfs import Sysfs

_PCI_NAME = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
_NVME_CONTROLLER = re.compile(r"nvme\d+")
_ISCSI_SESSION = re.compile(r"session\d+")
# path components that name a class directory, not a device on the way
_CLASS_DIRS = frozenset({"net", "block"})


# NamedTuple, not a frozen dataclass: the same immutable values with equality, made ~5x
# faster at import (each dataclass costs ~15 ms of a change's start in the emulated lab)
class Use(NamedTuple):
    """One thing the host does with a function, and the chain that leads there."""

    address: PciAddress
    subject: str            # "interface eth0", "block device nvme0n1p2"
    via: tuple[str, ...]    # hops between the subject and the function, top first
    why: str                # "carries the default route"
    short: str              # "eth0: default route" (list/show, JSON host_use)

    def __str__(self) -> str:
        via = f" (via {', '.join(self.via)})" if self.via else ""
        return f"{self.subject}{via} {self.why}"


class _Need(NamedTuple):
    """A dependency found at the top of a stack, before it is followed down."""

    subject: str
    why: str
    short: str


class Survey:
    """Every function the host uses, and for what. Read lazily and once per command.

    deep=True also looks for block devices held open by processes (a /proc scan):
    the change commands ask for it, `list` does not (it would cost every listing).
    """

    def __init__(self, sysfs: Sysfs, state: Facts, deep: bool = True) -> None:
        self._sysfs = sysfs
        self._state = state
        self._deep = deep

    @property
    def known(self) -> bool:
        """False where the facts beyond sysfs are unknown (a foreign tree): no use found
        then means nothing."""
        return self._state.known

    def of(self, address: PciAddress) -> list[Use]:
        return self.uses.get(address, [])

    @cached_property
    def uses(self) -> dict[PciAddress, list[Use]]:
        found: dict[PciAddress, list[Use]] = {}
        for use in (*self._network(), *self._storage(), *self._consoles()):
            entries = found.setdefault(use.address, [])
            if use not in entries:
                entries.append(use)
        return found

    # -- network -----------------------------------------------------------

    def _network(self) -> Iterable[Use]:
        state = self._state
        needs: dict[str, list[_Need]] = {}

        def need(ifname: str, why: str, short: str) -> None:
            needs.setdefault(ifname, []).append(_Need(f"interface {ifname}", why, short))

        for ifname, cidrs in state.addresses.items():
            need(ifname, f"has address {', '.join(cidrs)}", f"{ifname}: address {cidrs[0]}")
        for ifname, routes in state.routes.items():
            if "default" in routes:
                need(ifname, "carries the default route", f"{ifname}: default route")
            elif routes:
                need(ifname, f"carries routes to {', '.join(routes)}",
                     f"{ifname}: routes to {routes[0]}")
        for server, what in state.network_mounts.items():
            way = state.route_to(server)
            if way is not None:
                need(way, f"is the path to {what}", f"{way}: path to {what}")
        for block, wants in self._used_blocks.items():
            for _, rel in self._block_leaves(block, ()):
                target = self._iscsi_server(rel)
                via = state.route_to(target) if target else None
                if via is not None:
                    need(via, f"is the path to iSCSI target {target} of {block}, which "
                              f"{wants[0].why}", f"{via}: path to iSCSI {block}")
        # an interface enslaved to a bond, bridge, team or OVS is in use even when the
        # master carries nothing yet: guests' taps or later addresses depend on it
        for upper in self._sysfs.list_dir("devices/virtual/net"):
            for lower in self._lowers(upper):
                master = self._sysfs.read_link(f"class/net/{lower}/master")
                if master is not None and os.path.basename(master) == upper:
                    need(lower, f"is enslaved to {upper}", f"{lower}: port of {upper}")
        for ifname, wants in needs.items():
            for hops, address in self._net_functions(ifname, ()):
                for w in wants:
                    yield Use(address, w.subject, hops, w.why, w.short)

    def _lowers(self, ifname: str) -> list[str]:
        return [n[6:] for n in self._sysfs.list_dir(f"class/net/{ifname}")
                if n.startswith("lower_")]

    def _net_functions(self, ifname: str, hops: tuple[str, ...], chain: tuple[str, ...] = ()
                       ) -> Iterable[tuple[tuple[str, ...], PciAddress]]:
        """(hops, function) for every PCI function below an interface, through its stack
        (chain: as in _block_leaves, a loop in a hostile tree is followed once)."""
        if ifname in chain or len(chain) > 16:
            return
        chain = (*chain, ifname)
        lowers = self._lowers(ifname)
        if lowers:
            for lower in lowers:
                yield from self._net_functions(lower, (*hops, lower), chain)
            return
        found = self._pci_ancestor(f"class/net/{ifname}")
        if found is not None:
            yield (*hops, *found[1]), found[0]

    def _iscsi_server(self, rel: str) -> str | None:
        """The target address of the iSCSI session a disk belongs to, if it does."""
        parts = self._relative(self._sysfs.resolve(rel)).split("/")
        session = next((p for p in parts if _ISCSI_SESSION.fullmatch(p)), None)
        if session is None:
            return None
        for conn in self._sysfs.list_dir("class/iscsi_connection"):
            if conn.startswith(f"connection{session[7:]}:"):
                return self._sysfs.read_attr(f"class/iscsi_connection/{conn}/persistent_address")
        return None

    # -- storage -----------------------------------------------------------

    @cached_property
    def _used_blocks(self) -> dict[str, list[_Need]]:
        """block device -> what the host does with it directly (mount, swap, open, holder)."""
        state = self._state
        needs: dict[str, list[_Need]] = {}

        def need(block: str, why: str, short: str) -> None:
            # a dm device by the name an administrator knows (/dev/mapper/NAME)
            name = self._dm_name(block) or block
            needs.setdefault(block, []).append(_Need(f"block device {name}", why, short))

        for block, where in state.mounts.items():
            root = " (the root filesystem)" if where == "/" else ""
            need(block, f"is mounted on {where}{root}", f"{block}: mounted on {where}")
        for block in sorted(state.swaps):
            need(block, "is used as swap", f"{block}: swap")
        if self._deep:
            for block, who in state.open_blocks.items():
                need(block, f"is open by {', '.join(who)}", f"{block}: open by {who[0]}")
        # dm, md, LVM, LUKS: a device built on others holds them, used or not yet
        for top in self._sysfs.list_dir("devices/virtual/block"):
            for lower in self._sysfs.list_dir(f"class/block/{top}/slaves"):
                need(lower, f"is held by {self._label(top)}", f"{lower}: held by {top}")
        return needs

    def _storage(self) -> Iterable[Use]:
        for block, wants in self._used_blocks.items():
            start = (block,) if self._dm_name(block) else ()
            for hops, address in self._block_functions(block, start):
                for w in wants:
                    yield Use(address, w.subject, hops, w.why, w.short)

    def _block_leaves(self, block: str, hops: tuple[str, ...],
                      chain: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], str]]:
        """(hops, sysfs path) of the devices at the bottom of a block device's stack.

        chain: the devices above on this path. A device met again on it is a loop in a
        hostile tree (`slaves` pointing back): it leads nowhere new, so each use is found
        once; the depth bound keeps a wide hostile stack from costing more than a real one.
        """
        rel = f"class/block/{block}"
        if block in chain or len(chain) > 16 or not self._sysfs.exists(rel):
            return
        chain = (*chain, block)
        slaves = self._sysfs.list_dir(f"{rel}/slaves")
        if slaves:
            for lower in slaves:
                yield from self._block_leaves(lower, (*hops, lower), chain)
        elif self._sysfs.exists(f"{rel}/partition"):
            disk = os.path.basename(os.path.dirname(self._sysfs.resolve(rel)))
            yield from self._block_leaves(disk, (*hops, disk), chain)
        else:
            yield hops, rel

    def _block_functions(self, block: str,
                         hops: tuple[str, ...]) -> Iterable[tuple[tuple[str, ...], PciAddress]]:
        for below, rel in self._block_leaves(block, hops):
            found = self._pci_ancestor(rel)
            if found is not None:
                yield (*below, *found[1]), found[0]
                continue
            # native NVMe multipath: the namespace hangs below a virtual nvme-subsystem,
            # whose controller links lead to the PCI functions (one per path)
            parent = os.path.dirname(self._relative(self._sysfs.resolve(rel)))
            if os.path.basename(os.path.dirname(parent)) == "nvme-subsystem":
                subsys = os.path.basename(parent)
                for name in self._sysfs.list_dir(parent):
                    if _NVME_CONTROLLER.fullmatch(name):
                        controller = self._pci_ancestor(f"{parent}/{name}")
                        if controller is not None:
                            yield (*below, subsys, name), controller[0]

    def _dm_name(self, block: str) -> str | None:
        return self._sysfs.read_attr(f"class/block/{block}/dm/name")

    def _label(self, block: str) -> str:
        name = self._dm_name(block)
        return f"{block} ({name})" if name else block

    # -- consoles ----------------------------------------------------------

    def _consoles(self) -> Iterable[Use]:
        for fb in self._sysfs.list_dir("class/graphics"):
            if not fb.startswith("fb"):
                continue
            found = self._pci_ancestor(f"class/graphics/{fb}")
            if found is not None:
                yield Use(found[0], f"framebuffer {fb}", (), "drives the console",
                          f"{fb}: console")

    # -- paths ---------------------------------------------------------------

    def _relative(self, real: str) -> str:
        root = self._sysfs.root
        return real[len(root) + 1:] if real.startswith(root + os.sep) else ""

    def _pci_ancestor(self, rel: str) -> tuple[PciAddress, tuple[str, ...]] | None:
        """The nearest PCI function above a device, and the devices in between (top first).

        Links that leave the root are not followed (a simulated host is a tree anyone
        may have made): such a device has no function here.
        """
        parts = self._relative(self._sysfs.resolve(rel)).split("/")
        if len(parts) < 3 or parts[0] != "devices":
            return None
        for i in range(len(parts) - 1, 0, -1):
            if _PCI_NAME.fullmatch(parts[i]):
                try:
                    address = PciAddress.parse(parts[i])
                except BadInput:
                    return None
                between = [p for p in parts[i + 1:-1] if p not in _CLASS_DIRS]
                return address, tuple(reversed(between))
        return None


def survey(machine: Machine, deep: bool = True) -> Survey:
    return Survey(machine.sysfs, machine.facts, deep)
