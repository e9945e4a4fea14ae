"""Taking a snapshot: the parts of sysfs pcimgr reads, the host's facts and the guests'
PCI devices, written as one tar archive (docs/snapshots.md).

What is copied is decided by where pcimgr looks, not by what it found: every PCI root
(`devices/pci*`) whole, the virtual net and block devices (bonds, bridges, dm, md), the
IOMMU groups, the PCI drivers, the class links pcimgr follows, the mdev parents (a virtual
one whole: its types and mdevs are below it) and the NUMA nodes. Files are
read once, as pcimgr reads them (a page; `config` as far as this user may read it); what
cannot be read is left out, as pcimgr would find it; write-only files (`remove`, `reset`,
`bind`) are kept empty, as their presence is a fact. Never read: the BARs (`resource<N>`,
which map device memory), `rom` and `vpd` (reads that reach the device and can hang it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from pcimgr.core.errors import PcimgrError
from pcimgr.host import modaliases, recorded
from pcimgr.host.snapshot import layout

if TYPE_CHECKING:
    from pcimgr.host.libvirt_adapter import Domain
    from pcimgr.host.machine import Machine

_NEVER_READ = re.compile(r"resource\d+(_wc)?|rom|vpd")
# below a device: what holds nothing pcimgr reads, and can be thousands of entries
_SKIPPED_DIRS = frozenset({"power", "msi_irqs", "queues", "statistics", "queue", "mq",
                           "trace", "integrity", "wakeup", "bdi"})
# mdev_bus first: a virtual parent is copied whole, before a class link (vfio-dev) into
# one of its mdevs would copy that device alone
_CLASSES = ("mdev_bus", "net", "block", "graphics", "vfio-dev", "iommu", "iscsi_connection",
            "iscsi_session", "nvme", "nvme-subsystem", "drm", "scsi_host")
_WHOLE = ("devices/virtual/net", "devices/virtual/block", "devices/virtual/nvme-subsystem",
          "devices/virtual/iommu", "kernel/iommu_groups")
_PAGE = 4096
_MAX_DEPTH = 40


@dataclass
class Taken:
    functions: int
    files: int
    links: int
    size: int  # bytes of file contents before compression


class _Tree:
    """The archive's entries as they are collected: one per path, parents made first."""

    def __init__(self, tar: tarfile.TarFile, mtime: int) -> None:
        self._tar = tar
        self._mtime = mtime
        self._dirs: set[str] = set()
        self.taken = Taken(0, 0, 0, 0)

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, self._mtime
        return info

    def directory(self, name: str) -> None:
        if name in self._dirs or not name:
            return
        self.directory(os.path.dirname(name))
        self._dirs.add(name)
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, 0o755))

    def file(self, name: str, data: bytes, mode: int = 0o444) -> None:
        self.directory(os.path.dirname(name))
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))
        self.taken.files += 1
        self.taken.size += len(data)

    def link(self, name: str, target: str) -> None:
        self.directory(os.path.dirname(name))
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._tar.addfile(info)
        self.taken.links += 1


def take(machine: Machine, out: IO[bytes], domains: list[Domain] | None,
         config_dir: str | None, deep: bool) -> Taken:
    """Write the snapshot of MACHINE to OUT (gzip'ed tar). domains: every guest as libvirt
    has it (None: libvirt could not be asked); only their PCI devices are kept."""
    now = int(time.time())
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=6,
                      format=tarfile.PAX_FORMAT) as tar:
        tree = _Tree(tar, now)
        tree.taken.functions = _copy_sysfs(machine.sysfs.root, tree)
        _copy_system(machine, tree)
        _copy_dev(machine.sysfs.dev_root, tree)
        if config_dir:
            _copy_config(config_dir, tree)
        manifest = _manifest(machine, domains, now, deep)
        tree.file(layout.MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return tree.taken


def _copy_sysfs(root: str, tree: _Tree) -> int:
    covered: list[str] = []
    devices = sorted(n for n in _names(os.path.join(root, "devices")) if n.startswith("pci"))
    for rel in (*(f"devices/{n}" for n in devices), *_WHOLE):
        _walk(root, rel, tree, 0)
        covered.append(rel + "/")
    functions = 0
    for rel in ("bus/pci/devices", *(f"class/{c}" for c in _CLASSES), "bus/mdev/devices",
                "dev/block"):
        for name in _names(os.path.join(root, rel)):
            functions += rel == "bus/pci/devices"
            target = _entry(root, f"{rel}/{name}", tree)
            if not target or any(target.startswith(c) for c in covered):
                continue
            if rel == "class/mdev_bus":  # a virtual mdev parent: its types and mdevs below it
                _walk(root, target, tree, 0)
                covered.append(target + "/")
            else:  # a class link into a device no copied tree holds (an iSCSI connection
                # below a platform host): that device's own files, not its subtree
                _shallow(root, target, tree)
    _shallow(root, "bus/pci", tree)
    for driver in _names(os.path.join(root, "bus/pci/drivers")):
        _shallow(root, f"bus/pci/drivers/{driver}", tree)
    _shallow(root, "devices/system/node", tree, links=False)
    for node in _names(os.path.join(root, "devices/system/node")):
        if node.startswith("node"):
            _shallow(root, f"devices/system/node/{node}", tree, links=False)
    return functions


def _names(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _entries(root: str, rel: str, tree: _Tree) -> list[os.DirEntry[str]]:
    """The directory, in the archive, and its entries by name (none if it went away)."""
    tree.directory(f"{layout.SYS}/{rel}")
    try:
        return sorted(os.scandir(os.path.join(root, rel)), key=lambda e: e.name)
    except OSError:
        return []


def _walk(root: str, rel: str, tree: _Tree, depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    for entry in _entries(root, rel, tree):
        sub = f"{rel}/{entry.name}"
        if entry.is_symlink():
            _entry(root, sub, tree)
        elif entry.is_dir(follow_symlinks=False):
            if entry.name not in _SKIPPED_DIRS:
                _walk(root, sub, tree, depth + 1)
        else:
            _file(root, sub, entry.name, tree)


def _shallow(root: str, rel: str, tree: _Tree, links: bool = True) -> None:
    """A directory's files and links, not its subdirectories."""
    for entry in _entries(root, rel, tree):
        if entry.is_symlink():
            if links:
                _entry(root, f"{rel}/{entry.name}", tree)
        elif entry.is_file(follow_symlinks=False):
            _file(root, f"{rel}/{entry.name}", entry.name, tree)


def _entry(root: str, rel: str, tree: _Tree) -> str | None:
    """A link as it is (relative, as sysfs makes them); its target relative to the root,
    or None when it leaves the root (not copied: a snapshot never points outside itself)."""
    try:
        target = os.readlink(os.path.join(root, rel))
    except OSError:
        return None
    if os.path.isabs(target):
        return None
    resolved = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    if resolved == ".." or resolved.startswith("../"):
        return None
    tree.link(f"{layout.SYS}/{rel}", target)
    return resolved


def _file(root: str, rel: str, name: str, tree: _Tree) -> None:
    path = os.path.join(root, rel)
    if _NEVER_READ.fullmatch(name):
        return
    try:
        info = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISREG(info.st_mode):
        return
    if not info.st_mode & 0o444:
        tree.file(f"{layout.SYS}/{rel}", b"", 0o200)  # write-only: there, never read
        return
    data = _read(path)
    if data is not None:
        tree.file(f"{layout.SYS}/{rel}", data, 0o644 if info.st_mode & 0o200 else 0o444)


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.read(fd, _PAGE)
    except OSError:  # EIO, ENODEV, EINVAL, EAGAIN...: unreadable, so left out
        return None
    finally:
        os.close(fd)


def _copy_system(machine: Machine, tree: _Tree) -> None:
    release = modaliases.release(machine)
    names = [*layout.SYSTEM_FILES,
             *(f.format(release=release) for f in layout.RELEASE_FILES if release)]
    for rel in names:
        data = machine.read_system_file(rel)
        if data is not None and rel.endswith("/modules.alias"):
            data = modaliases.vfio_lines(data)  # of its ~1.4 MB, all pcimgr reads
        if data is not None:
            tree.file(f"{layout.SYSTEM}/{rel}", data)
    _copy_mdev_definitions(machine, tree)
    udev = machine.udev_database()
    if udev is None:
        return
    try:
        for name in _names(os.path.join(machine.sysfs.root, "bus/pci/devices")):
            found = udev.names(name)
            if found is not None:
                text = "".join(f"E:{k}={v}\n" for k, v in sorted(found.items()))
                tree.file(f"{layout.SYSTEM}/run/udev/data/+pci:{name}", text.encode())
    finally:
        udev.close()


def _copy_mdev_definitions(machine: Machine, tree: _Tree) -> None:
    """mdevctl's definition files (etc/mdevctl.d/PARENT/UUID). Read as files pcimgr did not
    write: no link followed (a planted one could carry /etc/shadow into the archive), regular
    files only (a FIFO must not hang the snapshot), 64 KiB at most, and only names that are
    a parent's and a UUID (mdev/definitions.py checks the content when it is read back)."""
    from pcimgr.core.mdev import check_name, is_uuid
    top = os.path.join(machine.system_root, "etc/mdevctl.d")
    try:
        with _no_follow_dir(top) as dfd:
            for parent in sorted(os.listdir(dfd))[:4096]:
                try:
                    check_name(parent, "parent")
                except PcimgrError:
                    continue
                if parent == "scripts.d":
                    continue
                with _no_follow_dir(parent, dfd) as pfd:
                    for name in sorted(os.listdir(pfd))[:4096]:
                        data = _plain_file(name, pfd) if is_uuid(name) else None
                        if data is not None:
                            tree.file(f"{layout.SYSTEM}/etc/mdevctl.d/{parent}/{name}", data)
    except OSError:  # absent, a link, unreadable: nothing recorded
        return


@contextlib.contextmanager
def _no_follow_dir(path: str, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _plain_file(name: str, dir_fd: int, limit: int = 65536) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        data = os.read(fd, limit + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _copy_dev(dev_root: str, tree: _Tree) -> None:
    """Empty files where the host has the device nodes pcimgr looks for."""
    for name in layout.DEV_NODES:
        path = os.path.join(dev_root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            for sub, _, files in _bounded_walk(path):
                for f in files:
                    tree.file(f"{layout.DEV}/{os.path.relpath(os.path.join(sub, f), dev_root)}",
                              b"", 0o600)
        elif os.path.exists(path) and not os.path.islink(path):
            tree.file(f"{layout.DEV}/{name}", b"", 0o600)


def _bounded_walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    for sub, dirs, files in os.walk(top):
        if sub.count("/") - top.count("/") >= 2:
            dirs[:] = []
        yield sub, dirs, files


def _copy_config(config_dir: str, tree: _Tree) -> None:
    """The definitions and pools (JSON pcimgr wrote): regular files, no links followed."""
    for sub in ("", "devices", "pools"):
        directory = os.path.join(config_dir, sub)
        for name in _names(directory):
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and name.endswith(".json") and \
                    info.st_size <= 1 << 20:
                with open(path, "rb") as f:
                    tree.file(f"{layout.CONFIG}/{sub + '/' if sub else ''}{name}", f.read())


def _manifest(machine: Machine, domains: list[Domain] | None, now: int,
              deep: bool) -> dict[str, Any]:
    from pcimgr import __version__
    facts = machine.facts
    host: dict[str, Any] = recorded.record(facts, deep) if facts.known else {}
    host |= {"hostname": os.uname().nodename if machine.kind == "this host" else machine.kind,
             "kernel": modaliases.release(machine) or "",
             "cmdline": machine.kernel_cmdline(),
             "interrupt_remapping": machine.interrupt_remapping(),
             "modules": _modules(machine),
             "vfio_holders": {str(g): p for g, p in sorted(machine.vfio_holders().items())},
             "vf_configs": _vf_configs(machine)}
    return {"format": layout.FORMAT, "version": layout.VERSION,
            "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "pcimgr": __version__, "facts_known": facts.known, "host": host,
            "guests": None if domains is None else [_guest(d) for d in domains]}


def _modules(machine: Machine) -> list[str]:
    """The modules the kernel has (loaded, built in or installed), by name."""
    names = set(_names(os.path.join(machine.sysfs.root, "module")))
    release = modaliases.release(machine)
    for index in ("modules.dep", "modules.builtin"):
        data = machine.read_system_file(f"lib/modules/{release}/{index}") if release else None
        for line in (data or b"").decode("utf-8", "replace").splitlines():
            path = line.split(":", 1)[0]
            if path.endswith(".ko") or ".ko." in path:
                names.add(os.path.basename(path).split(".ko")[0].replace("-", "_"))
    for driver in _names(os.path.join(machine.sysfs.root, "bus/pci/drivers")):
        if machine.module_available(driver):
            names.add(driver)
    return sorted(names)


def _vf_configs(machine: Machine) -> dict[str, list[dict[str, Any]]]:
    """Each SR-IOV PF's VF settings (MAC, VLAN, ...), as its driver reports them, asked
    through the interface pcimgr asks (a virtio PF's is below its virtio device)."""
    from pcimgr.host import discovery
    found: dict[str, list[dict[str, Any]]] = {}
    for device in discovery.scan(machine.sysfs).devices:
        if device.sriov is None or not device.netdevs:
            continue
        try:
            configs = machine.vf_configs(str(device.address), device.netdevs[0])
        except Exception:  # noqa: BLE001 - a PF whose driver cannot say: left out
            continue
        found[str(device.address)] = [c.as_dict() for c in configs]
    return found


def _guest(domain: Domain) -> dict[str, Any]:
    from pcimgr.core import hostdev_xml
    return {"name": domain.name, "uuid": domain.uuid, "active": domain.active,
            "persistent": domain.persistent,
            "live_xml": _devices_only(domain.name, domain.uuid, domain.live_xml, hostdev_xml),
            "config_xml": _devices_only(domain.name, domain.uuid, domain.config_xml,
                                        hostdev_xml)}


def _devices_only(name: str, uuid: str, xml: str | None, hostdev_xml: Any) -> str | None:
    """The domain's PCI devices in a domain element of their own: nothing else of its
    XML (graphics passwords, disk paths) goes into a snapshot."""
    if xml is None:
        return None
    from xml.sax.saxutils import escape
    parts = [hostdev_xml.to_string(e) for _, e in hostdev_xml.pci_devices(xml)]
    return (f"<domain><name>{escape(name)}</name><uuid>{escape(uuid)}</uuid><devices>"
            + "".join(parts) + "</devices></domain>")
