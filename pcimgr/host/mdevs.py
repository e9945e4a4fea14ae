"""Mediated devices as sysfs shows them: the parents in class/mdev_bus with their
`mdev_supported_types`, and the mdevs in bus/mdev/devices (docs/mdev.md).

Names read from the tree are checked before they name a path or reach a message: an entry
that is not a parent's, a type's or a UUID's name is left out, as a foreign tree may hold
anything.
"""

from __future__ import annotations

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, NotFound
from pcimgr.core.mdev import Mdev, MdevParent, MdevType, check_name, is_uuid
from pcimgr.host.sysfs import Sysfs

PARENTS = "class/mdev_bus"
MDEVS = "bus/mdev/devices"


def parent_path(name: str, *rest: str) -> str:
    return "/".join((PARENTS, name, *rest))


def type_path(parent: str, type_id: str, *rest: str) -> str:
    return parent_path(parent, "mdev_supported_types", type_id, *rest)


def mdev_path(uuid: str, *rest: str) -> str:
    return "/".join((MDEVS, uuid, *rest))


def _valid(name: str, what: str) -> bool:
    try:
        check_name(name, what)
    except BadInput:
        return False
    return True


def _int(text: str | None) -> int | None:
    value = (text or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _basename(link: str | None) -> str | None:
    return link.rstrip("/").rsplit("/", 1)[-1] if link else None


def parent_names(sysfs: Sysfs) -> list[str]:
    return [n for n in sysfs.list_dir(PARENTS) if _valid(n, "parent")]


def read_type(sysfs: Sysfs, parent: str, type_id: str) -> MdevType:
    rel = type_path(parent, type_id)
    devices = sorted(n.lower() for n in sysfs.list_dir(f"{rel}/devices") if is_uuid(n))
    return MdevType(type_id, sysfs.read_attr(f"{rel}/name"),
                    sysfs.read_attr(f"{rel}/description"), sysfs.read_attr(f"{rel}/device_api"),
                    _int(sysfs.read_attr(f"{rel}/available_instances")), tuple(devices))


def read_parent(sysfs: Sysfs, name: str) -> MdevParent | None:
    if not _valid(name, "parent") or not sysfs.exists(parent_path(name)):
        return None
    types = tuple(read_type(sysfs, name, t)
                  for t in sysfs.list_dir(parent_path(name, "mdev_supported_types"))
                  if _valid(t, "mdev type"))
    try:
        pci: str | None = str(PciAddress.parse(name)) if ":" in name else None
    except BadInput:
        pci = None
    return MdevParent(name, pci, _basename(sysfs.read_link(parent_path(name, "driver"))), types)


def parents(sysfs: Sysfs) -> list[MdevParent]:
    found = [read_parent(sysfs, n) for n in parent_names(sysfs)]
    return [p for p in found if p is not None]


def read_mdev(sysfs: Sysfs, uuid: str) -> Mdev | None:
    link = sysfs.read_link(mdev_path(uuid))
    if link is None:
        return None
    # bus/mdev/devices/UUID -> ../../../devices/.../PARENT/UUID
    parts = link.rstrip("/").split("/")
    parent = parts[-2] if len(parts) >= 2 else ""
    type_id = _basename(sysfs.read_link(mdev_path(uuid, "mdev_type")))
    group = _basename(sysfs.read_link(mdev_path(uuid, "iommu_group")))
    return Mdev(uuid, parent if _valid(parent, "parent") else "?",
                type_id if type_id and _valid(type_id, "mdev type") else None,
                _basename(sysfs.read_link(mdev_path(uuid, "driver"))),
                int(group) if group and group.isascii() and group.isdigit() else None)


def mdevs(sysfs: Sysfs) -> list[Mdev]:
    found = [read_mdev(sysfs, n) for n in sysfs.list_dir(MDEVS) if is_uuid(n) and n == n.lower()]
    return [m for m in found if m is not None]


# -- what a command names, or a one-line error saying what there is ---------------------

def require_parent(sysfs: Sysfs, name: str) -> MdevParent:
    parent = read_parent(sysfs, name)
    if parent is None:
        known = parent_names(sysfs)
        raise NotFound(f"no mdev parent {name!r} on this host"
                       + (f" (parents: {', '.join(known)})" if known else
                          " (no device is registered with the mdev core: load its driver, "
                          "e.g. kvmgt, nvidia-vgpu-vfio or mtty)")
                       + "; `pcimgr mdev types` lists the parents and their types")
    return parent


def require_type(parent: MdevParent, type_id: str) -> MdevType:
    found = parent.type(type_id)
    if found is None:
        raise NotFound(f"{parent.name} has no mdev type {type_id!r}; its types: "
                       f"{', '.join(t.id for t in parent.types) or 'none'} "
                       f"(`pcimgr mdev types {parent.name}`)")
    return found


def require_mdev(sysfs: Sysfs, uuid: str) -> Mdev:
    found = read_mdev(sysfs, uuid)
    if found is None:
        raise NotFound(f"no mdev {uuid} on this host; `pcimgr mdev list` shows them "
                       "(and `--defined` the ones kept across reboots)")
    return found
