"""A function's VFIO device nodes for a user who is not root: DPDK, rootless QEMU and
containers open /dev/vfio/N (the group interface) or /dev/vfio/devices/vfioN (IOMMUFD's
cdev) themselves. The kernel makes both root's, mode 0600; `detach --owner USER[:GROUP]`
gives them to USER (and GROUP, mode 0660) once the function is on its VFIO driver, and a
definition with an owner does it again at every boot. Undone by the kernel itself when the
function leaves VFIO (the nodes go), and by undo() to root's 0600 on a rollback.
"""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass

from pcimgr.core.errors import BadInput
from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import Sysfs, device_path
from pcimgr.plans.step import StepBase, register

KERNEL_DEFAULT = (0, 0, 0o600)


def resolve(owner: str) -> tuple[int, int | None]:
    """USER[:GROUP] (names or numbers) as ids; BadInput naming what is unknown."""
    user, _, group = owner.partition(":")
    try:
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    except KeyError:
        raise BadInput(f"--owner: no user {user!r} on this host; give an existing user "
                       "(`getent passwd`), optionally :GROUP") from None
    if not group:
        return uid, None
    try:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise BadInput(f"--owner: no group {group!r} on this host; give an existing group "
                       "(`getent group`)") from None
    return uid, gid


def nodes(sysfs: Sysfs, address: str) -> list[str]:
    """The function's VFIO nodes that exist now, relative to /dev."""
    found = []
    group = sysfs.read_link(device_path(address, "iommu_group"))
    if group and sysfs.dev_node_exists(f"vfio/{group.rsplit('/', 1)[-1]}"):
        found.append(f"vfio/{group.rsplit('/', 1)[-1]}")
    for name in sysfs.list_dir(device_path(address, "vfio-dev")):
        if sysfs.dev_node_exists(f"vfio/devices/{name}"):
            found.append(f"vfio/devices/{name}")
    return found


@register
@dataclass(frozen=True)
class OwnNodes(StepBase):
    """Give the function's VFIO nodes to uid (and gid, mode 0660; else the user's alone)."""

    address: str
    owner: str   # as given, for people
    uid: int
    gid: int | None
    kind: str = "own-nodes"

    @property
    def wanted(self) -> tuple[int, int, int]:
        return (self.uid, self.gid, 0o660) if self.gid is not None else (self.uid, 0, 0o600)

    def summary(self) -> str:
        return f"{self.address}: its VFIO device nodes to {self.owner}"

    def describe(self) -> list[str]:
        uid, gid, mode = self.wanted
        return [f"chown {uid}:{gid} /dev/vfio/<its group> /dev/vfio/devices/<its vfioN>; "
                f"chmod {mode:o} them"]

    def apply(self, machine: Machine) -> None:
        for rel in nodes(machine.sysfs, self.address):
            machine.sysfs.set_dev_node_owner(rel, *self.wanted)

    def undo(self, machine: Machine) -> None:
        for rel in nodes(machine.sysfs, self.address):
            if machine.sysfs.dev_node_owner(rel) == self.wanted:
                machine.sysfs.set_dev_node_owner(rel, *KERNEL_DEFAULT)

    def undo_describe(self) -> list[str]:
        return [f"chown 0:0 /dev/vfio/<the group of {self.address}> and its vfioN; "
                "chmod 600 them (as the kernel makes them)"]


def drift(sysfs: Sysfs, address: str, owner: str) -> list[str]:
    """What status says when the nodes are not the defined owner's."""
    uid, gid = resolve(owner)
    want = (uid, gid, 0o660) if gid is not None else (uid, 0, 0o600)
    return [f"/dev/{rel} is {o[0]}:{o[1]} mode {o[2]:o}, defined {owner}"
            for rel in nodes(sysfs, address)
            if (o := sysfs.dev_node_owner(rel)) is not None and o != want]
