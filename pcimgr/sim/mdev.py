"""Mediated devices on the simulated kernel: parents with their types laid out as Linux
registers them (mdev_register_parent), and the reactions to `create` and `remove`.

The rules (drivers/vfio/mdev/mdev_core.c and mdev_sysfs.c of 6.1; the samples and
tests/lab for what a real kernel answered): a UUID that does not parse is EINVAL, one in
use EEXIST; a parent out of capacity refuses in its probe (mtty: ENOSPC); an mdev is a
directory named by its UUID below its parent, with `mdev_type`, `remove`, `driver`,
`subsystem`, its own IOMMU group (an emulated one: the lowest free number) and a VFIO
device, so that /dev/vfio/N appears; removing one a process holds blocks in the kernel
until it lets go (the simulator answers EBUSY instead of hanging its caller).

Capacity is a pool of units per parent that each type's instances draw on (mtty: 24 ports,
mtty-1 takes one, mtty-2 two), and a parent may be homogeneous (NVIDIA's time-sliced vGPU:
once one type has an instance, the others have none).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable

from pcimgr.sim import tree, undo

MDEVS = "bus/mdev/devices"
MDEV_DRIVERS = "bus/mdev/drivers"
PARENTS = "class/mdev_bus"
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}")


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def register_parent(root: str, parent_dir: str, name: str, spec: dict) -> None:
    """The parent's mdev_supported_types and its class/mdev_bus link, as the builder lays a
    parent out (outside a reaction: plain file operations)."""
    for d in (MDEVS, PARENTS, os.path.join(MDEV_DRIVERS, spec["driver"])):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    if not os.path.isdir(parent_dir):  # a virtual parent: the entries every device has
        os.makedirs(os.path.join(parent_dir, "power"))
        with open(os.path.join(parent_dir, "uevent"), "w"):
            pass
        cls = os.path.join(root, "class", os.path.basename(os.path.dirname(parent_dir)))
        os.makedirs(cls, exist_ok=True)
        os.symlink(os.path.relpath(cls, parent_dir), os.path.join(parent_dir, "subsystem"))
        os.symlink(os.path.relpath(parent_dir, cls), os.path.join(cls, name))
    for type_id, t in spec["types"].items():
        tdir = os.path.join(parent_dir, "mdev_supported_types", type_id)
        os.makedirs(os.path.join(tdir, "devices"))
        files = {"name": t["name"], "device_api": t["device_api"], "create": ""}
        if t.get("description") is not None:
            files["description"] = t["description"]
        for fname, text in files.items():
            with open(os.path.join(tdir, fname), "w") as f:
                f.write(text + "\n" if text else "")
    os.symlink(os.path.relpath(parent_dir, os.path.join(root, PARENTS)),
               os.path.join(root, PARENTS, name))
    refresh_available(root, name, spec, plain=True)


class MdevBus:
    """The mdev core and the parents' drivers, as far as writes reach them."""

    def __init__(self, root: str, specs: dict[str, dict], group_of_new: Callable[[], int],
                 vfio_node: Callable[[int], None], held: Callable[[int], bool]) -> None:
        self.root = root
        self.specs = specs  # parent name -> its spec (the marker's "mdev_parents")
        self._new_group = group_of_new
        self._vfio_node = vfio_node
        self._held = held

    def handles(self, parent: str, attr: str) -> bool:
        """parent: the real directory the written file is in."""
        if attr == "create":
            return os.path.basename(os.path.dirname(parent)) == "mdev_supported_types" and \
                self._parent_named(os.path.dirname(os.path.dirname(parent))) is not None
        return attr == "remove" and self._is_mdev(parent)

    def write(self, parent: str, attr: str, value: str, commit: Callable[[], None]) -> None:
        if attr == "create":
            return self._create(parent, value, commit)
        return self._remove(parent, value, commit)

    # -- create_store() -> mdev_device_create() -> the parent driver's probe ------------

    def _create(self, type_dir: str, value: str, commit: Callable[[], None]) -> None:
        text = value[:-1] if value.endswith("\n") else value
        if not _GUID.fullmatch(text):
            raise _fail(errno.EINVAL)  # guid_parse()
        uuid = text.lower()
        if os.path.lexists(os.path.join(self.root, MDEVS, uuid)):
            raise _fail(errno.EEXIST)
        parent_dir = os.path.dirname(os.path.dirname(type_dir))
        name = self._parent_named(parent_dir)
        assert name is not None
        spec = self.specs[name]
        type_id = os.path.basename(type_dir)
        if available(self.root, name, spec, type_id) < 1:
            raise _fail(errno.ENOSPC)  # mtty_probe(); the device is deleted again
        commit()
        mdir = os.path.join(parent_dir, uuid)
        undo.mkdir(mdir)
        link = lambda target, at: undo.symlink(os.path.relpath(target, os.path.dirname(at)), at)  # noqa: E731
        link(type_dir, os.path.join(mdir, "mdev_type"))
        link(os.path.join(self.root, "bus/mdev"), os.path.join(mdir, "subsystem"))
        ddir = os.path.join(self.root, MDEV_DRIVERS, spec["driver"])
        link(ddir, os.path.join(mdir, "driver"))
        link(mdir, os.path.join(ddir, uuid))
        undo.write_text(os.path.join(mdir, "remove"), "")
        undo.write_text(os.path.join(mdir, "uevent"), f"DRIVER={spec['driver']}\n")
        undo.makedirs(os.path.join(mdir, "power"))
        for group in spec.get("attribute_groups", ()):  # the parent driver's (mtty: vendor)
            undo.makedirs(os.path.join(mdir, group))
        link(mdir, os.path.join(type_dir, "devices", uuid))
        link(mdir, os.path.join(self.root, MDEVS, uuid))
        group = self._new_group()
        gdir = os.path.join(self.root, tree.GROUPS, str(group))
        undo.makedirs(os.path.join(gdir, "devices"))
        undo.write_text(os.path.join(gdir, "type"), "unknown\n")  # an emulated group (lab)
        link(mdir, os.path.join(gdir, "devices", uuid))
        link(gdir, os.path.join(mdir, "iommu_group"))
        tree.add_vfio_device(self.root, mdir)
        self._vfio_node(group)
        refresh_available(self.root, name, spec)

    # -- remove_store() -> mdev_device_remove() --------------------------------------

    def _remove(self, mdir: str, value: str, commit: Callable[[], None]) -> None:
        try:
            flag = int(value.strip(), 0)
        except ValueError:
            raise _fail(errno.EINVAL) from None
        if not flag:
            commit()  # `echo 0 > remove` is accepted and does nothing
            return
        group = _group(mdir)
        if group is not None and self._held(group):
            raise _fail(errno.EBUSY)
        commit()
        uuid = os.path.basename(mdir)
        parent_dir = os.path.dirname(mdir)
        name = self._parent_named(parent_dir)
        type_dir = os.path.realpath(os.path.join(mdir, "mdev_type"))
        driver = os.path.realpath(os.path.join(mdir, "driver"))
        for entry in (os.path.join(type_dir, "devices", uuid), os.path.join(driver, uuid),
                      os.path.join(self.root, MDEVS, uuid)):
            undo.discard(entry)
        if group is not None:
            gdir = os.path.join(self.root, tree.GROUPS, str(group))
            undo.discard(gdir)
        undo.discard(mdir)
        _drop_vfio_class(self.root)
        if group is not None:
            self._vfio_node(group)
        if name is not None:
            refresh_available(self.root, name, self.specs[name])

    # -- facts ------------------------------------------------------------------------

    def _parent_named(self, directory: str) -> str | None:
        for name in self.specs:
            link = os.path.join(self.root, PARENTS, name)
            if os.path.lexists(link) and os.path.realpath(link) == directory:
                return name
        return None

    def _is_mdev(self, directory: str) -> bool:
        uuid = os.path.basename(directory)
        link = os.path.join(self.root, MDEVS, uuid)
        return os.path.lexists(link) and os.path.realpath(link) == directory


def _group(mdir: str) -> int | None:
    try:
        return int(os.path.basename(os.readlink(os.path.join(mdir, "iommu_group"))))
    except (OSError, ValueError):
        return None


def _drop_vfio_class(root: str) -> None:
    cls = os.path.join(root, "class/vfio-dev")
    for name in os.listdir(cls) if os.path.isdir(cls) else ():
        if not os.path.exists(os.path.join(cls, name)):
            undo.discard(os.path.join(cls, name))


def _live(root: str, name: str, spec: dict) -> dict[str, int]:
    """type -> its live instances, from the type directories' devices/ entries."""
    tdir = os.path.join(root, PARENTS, name, "mdev_supported_types")
    return {t: len(os.listdir(os.path.join(tdir, t, "devices"))) for t in spec["types"]}


def available(root: str, name: str, spec: dict, type_id: str) -> int:
    live = _live(root, name, spec)
    if spec.get("homogeneous") and any(n for t, n in live.items() if t != type_id):
        return 0
    used = sum(spec["types"][t]["cost"] * n for t, n in live.items())
    per_type = spec["types"][type_id].get("max")
    left = (spec["capacity"] - used) // spec["types"][type_id]["cost"]
    return max(0, min(left, per_type - live[type_id]) if per_type is not None else left)


def refresh_available(root: str, name: str, spec: dict, plain: bool = False) -> None:
    """Every type's available_instances: creating one instance may shrink the others'."""
    tdir = os.path.join(root, PARENTS, name, "mdev_supported_types")
    for type_id in spec["types"]:
        path = os.path.join(tdir, type_id, "available_instances")
        text = f"{available(root, name, spec, type_id)}\n"
        if plain:
            with open(path, "w") as f:
                f.write(text)
        else:
            undo.write_text(path, text)
