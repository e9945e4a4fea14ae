"""Plan steps for mediated devices: create one, remove one. Each undoes the other, so a
rollback (or the recovery of a killed run from its journal) leaves the parent as it was.

The kernel's `create` is synchronous (mdev_device_create() adds and probes the device
before the write returns), and so is `remove`; both are checked by reading back.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

from pcimgr.core.errors import KernelError
from pcimgr.core.mdev import check_attr, check_name, parse_uuid
from pcimgr.host import mdevs
from pcimgr.host.machine import Machine
from pcimgr.plans.step import StepBase, register

SYS = "/sys"
# mdevs another starter made while this process meant to (recovery after a kill cannot tell
# and removes them: they are started again by their rule or definition)
ADOPTED: set[str] = set()


def create(machine: Machine, uuid: str, parent: str, type_id: str,
           attrs: tuple[tuple[str, str], ...]) -> None:
    sysfs = machine.sysfs
    try:
        sysfs.write_attr(mdevs.type_path(parent, type_id, "create"), uuid)
    except KernelError as e:
        live = mdevs.read_mdev(sysfs, uuid)
        # EEXIST: started meanwhile by another starter (mdevctl's rule at the same event);
        # it is theirs, and this run's rollback leaves it alone
        if e.errno != errno.EEXIST or live is None or (live.parent, live.type_id) != (
                parent, type_id):
            raise
        ADOPTED.add(uuid)
        return
    if not sysfs.exists(mdevs.mdev_path(uuid)):
        raise KernelError(f"mdev {uuid} is not in {SYS}/{mdevs.MDEVS} after writing its "
                          f"UUID to {type_id}'s create; see `dmesg`")
    for name, value in attrs:  # as mdevctl starts one: the attributes after the create
        if not sysfs.exists(mdevs.mdev_path(uuid, name)):
            raise KernelError(f"mdev {uuid} has no attribute {name!r} (its type {type_id} "
                              f"on {parent} does not take one); remove it from the definition")
        sysfs.write_attr(mdevs.mdev_path(uuid, name), value)


def remove(machine: Machine, uuid: str) -> None:
    sysfs = machine.sysfs
    sysfs.write_attr(mdevs.mdev_path(uuid, "remove"), "1")
    if sysfs.exists(mdevs.mdev_path(uuid)):
        raise KernelError(f"mdev {uuid} is still in {SYS}/{mdevs.MDEVS} after writing 1 to "
                          "its remove; see `dmesg`")


def _create_lines(uuid: str, parent: str, type_id: str,
                  attrs: tuple[tuple[str, str], ...]) -> list[str]:
    lines = [f"echo {uuid} > {SYS}/{mdevs.type_path(parent, type_id, 'create')}"]
    lines += [f"echo {value!r} > {SYS}/{mdevs.mdev_path(uuid, name)}" for name, value in attrs]
    return lines


def _remove_line(uuid: str) -> str:
    return f"echo 1 > {SYS}/{mdevs.mdev_path(uuid, 'remove')}"


class _MdevStep(StepBase):
    """What both mdev steps read back from a journal: its names held to the rules a fresh
    plan's are (they name paths)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Any:
        if data["address"] != parse_uuid(str(data["address"])):
            raise ValueError(f"{data['address']!r} is not a UUID as the kernel names an mdev")
        check_name(data["parent"], "parent")
        check_name(data["type_id"], "mdev type")
        try:
            pairs = tuple(check_attr(str(k), str(v)) for k, v in data.get("attrs", ()))
        except (TypeError, ValueError):
            raise ValueError(f"attrs {data.get('attrs')!r} are not name-value pairs") from None
        return cls(**(data | {"attrs": pairs}))


@register
@dataclass(frozen=True)
class CreateMdev(_MdevStep):
    address: str  # the mdev's UUID
    parent: str
    type_id: str
    attrs: tuple[tuple[str, str], ...] = ()
    kind: str = "mdev-create"

    def summary(self) -> str:
        return f"{self.parent}: create mdev {self.address} of type {self.type_id}"

    def describe(self) -> list[str]:
        return _create_lines(self.address, self.parent, self.type_id, self.attrs)

    def apply(self, machine: Machine) -> None:
        create(machine, self.address, self.parent, self.type_id, self.attrs)

    def undo(self, machine: Machine) -> None:
        if self.address not in ADOPTED and machine.sysfs.exists(mdevs.mdev_path(self.address)):
            remove(machine, self.address)

    def undo_describe(self) -> list[str]:
        return [_remove_line(self.address) + "   # if it is there"]

    def undo_vfio(self) -> tuple[str, ...]:
        return (self.address,)


@register
@dataclass(frozen=True)
class RemoveMdev(_MdevStep):
    address: str  # the mdev's UUID
    parent: str
    type_id: str
    attrs: tuple[tuple[str, str], ...] = ()  # its definition's, to start it again on undo
    kind: str = "mdev-remove"

    def summary(self) -> str:
        return f"{self.parent}: remove mdev {self.address} ({self.type_id})"

    def describe(self) -> list[str]:
        return [_remove_line(self.address)]

    def apply(self, machine: Machine) -> None:
        remove(machine, self.address)

    def undo(self, machine: Machine) -> None:
        if not machine.sysfs.exists(mdevs.mdev_path(self.address)):
            create(machine, self.address, self.parent, self.type_id, self.attrs)

    def undo_describe(self) -> list[str]:
        return [line + ("   # unless it is there" if i == 0 else "") for i, line in
                enumerate(_create_lines(self.address, self.parent, self.type_id, self.attrs))]
