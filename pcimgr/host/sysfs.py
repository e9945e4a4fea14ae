"""The only door to the kernel: every read and write of sysfs (and /dev/vfio) goes here.

All paths are relative to one root ("/sys", or a simulated host's directory) so
that tests, the demo and rehearsals run the production code against a tree.
A simulated host (sim/machine.py) hands in its kernel's reaction to writes; the
write itself is the same code either way, and nothing here knows which it is.
"""

from __future__ import annotations

import errno as errno_mod
import os
import stat
from collections.abc import Callable

from pcimgr.core.errors import BadInput, KernelError

REAL_ROOT = "/sys"
DEVICES = "bus/pci/devices"


def device_path(address: object, *attr: str) -> str:
    """The path of a function's directory, or of something in it, relative to the root."""
    return "/".join((DEVICES, str(address), *attr))

# Errors that mean "this attribute is not there (any more)" when reading: a
# device removed mid-scan gives ENOENT/ENODEV, some attributes refuse to be
# read by non-root (EACCES/EPERM) or by state (EINVAL, EIO).
_ABSENT = (errno_mod.ENOENT, errno_mod.ENODEV, errno_mod.ENXIO, errno_mod.EACCES,
           errno_mod.EPERM, errno_mod.EINVAL, errno_mod.EIO, errno_mod.ENOTDIR)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC


class Gone(Exception):
    """The directory disappeared (a function removed while being read)."""


class Directory:
    """One sysfs directory held open, so that each entry is opened relative to it.

    Discovery reads several entries of thousands of functions; opening them
    relative to a directory fd skips the path walk through bus/pci/devices,
    and trying a name that is absent costs less than listing the directory.
    Absent or unreadable entries read as None.
    """

    def __init__(self, path: str, parent: Directory | None = None) -> None:
        self.path = path
        try:
            if parent is None:
                self._fd = os.open(path, _DIR_FLAGS)
            else:  # relative to the parent: no walk of the path from the root again
                self._fd = os.open(path.rpartition("/")[2], _DIR_FLAGS, dir_fd=parent._fd)
        except OSError as e:
            if e.errno in _ABSENT:
                raise Gone(path) from None
            raise

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def sub(self, name: str) -> Directory:
        """An entry of this directory held open the same way (one name, no slashes)."""
        return Directory(f"{self.path}/{name}", self)

    def read(self, name: str) -> str | None:
        return _read_text(name, self._fd)

    def read_bytes(self, name: str, size: int = 64) -> bytes | None:
        """A binary entry (`config`: its first 64 bytes anyone may read); None if absent."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self._fd)
        except OSError as e:
            if e.errno in _ABSENT or e.errno == errno_mod.EISDIR:
                return None
            raise
        try:
            return os.read(fd, size)
        except OSError as e:
            if e.errno in _ABSENT:
                return None
            raise
        finally:
            os.close(fd)

    def link(self, name: str) -> str | None:
        try:
            return os.readlink(name, dir_fd=self._fd)
        except OSError as e:
            if e.errno in _ABSENT:
                return None
            raise

    def list(self, name: str) -> list[str] | None:
        # by path: listdir(fd) costs a dup, an fdopendir and a rewind on top
        try:
            return sorted(os.listdir(f"{self.path}/{name}"))
        except OSError as e:
            if e.errno in _ABSENT:
                return None
            raise


WriteFn = Callable[[str, str], None]
# what a kernel does with a write: (path relative to the root, value, the raw write)
React = Callable[[str, str, WriteFn], None]


class Sysfs:
    def __init__(self, root: str = REAL_ROOT, dev_root: str = "/dev",
                 react: React | None = None) -> None:
        self.root = os.path.abspath(root)
        self.dev_root = dev_root  # where device nodes (/dev/vfio/N) live
        self._react = react
        self.trace: Callable[[str], None] | None = None  # each write as it happens (-v)

    def path(self, rel: str) -> str:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise BadInput(f"refusing sysfs path outside the root: {rel!r}")
        return os.path.join(self.root, rel)

    def read_attr(self, rel: str) -> str | None:
        """The attribute's text without its trailing newline, or None if unreadable."""
        return _read_text(self.path(rel))

    def read_bytes(self, rel: str, size: int = 4096) -> bytes | None:
        """A binary attribute (a function's `config`): as much as this user may read
        (64 bytes for all but root), or None if absent."""
        try:
            fd = os.open(self.path(rel), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in _ABSENT:
                return None
            raise
        try:
            return os.read(fd, size)
        finally:
            os.close(fd)

    def read_link(self, rel: str) -> str | None:
        """The symlink's target as stored, or None when it is not a link."""
        try:
            return os.readlink(self.path(rel))
        except OSError as e:
            if e.errno in _ABSENT:
                return None
            raise

    def list_dir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError as e:
            if e.errno in _ABSENT:
                return []
            raise

    def resolve(self, rel: str) -> str:
        """The absolute real path of rel (symlinks followed)."""
        return os.path.realpath(self.path(rel))

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def dev_node_exists(self, rel: str) -> bool:
        return os.path.exists(os.path.join(self.dev_root, rel))

    def dev_node_owner(self, rel: str) -> tuple[int, int, int] | None:
        """(uid, gid, permission bits) of a device node; None when absent or a link."""
        try:
            info = os.lstat(self._node(rel))
        except FileNotFoundError:
            return None
        if not (stat.S_ISCHR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            return None  # a simulated host's nodes are plain files; never a link
        return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)

    def set_dev_node_owner(self, rel: str, uid: int, gid: int, mode: int) -> bool:
        """chown and chmod a device node, never through a link; False when it is not there."""
        if self.dev_node_owner(rel) is None:
            return False
        fd = os.open(self._node(rel), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            # through /proc/self/fd: chmod and chown of an O_PATH fd, not of a path a link
            # could have been swapped into
            os.chown(f"/proc/self/fd/{fd}", uid, gid)
            os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)
        return True

    def _node(self, rel: str) -> str:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise BadInput(f"refusing device path outside /dev: {rel!r}")
        return os.path.join(self.dev_root, rel)

    def directory(self, rel: str) -> Directory:
        """Hold a directory open for many reads; raises Gone if it is not there."""
        return Directory(self.path(rel))

    def write_attr(self, rel: str, value: str) -> None:
        """Write one attribute as `echo value > file` would, raising KernelError on refusal."""
        path = self.path(rel)
        if self.trace is not None:
            self.trace(f"echo {value.rstrip(chr(10))!r} > {path}")
        try:
            if self._react is not None:
                self._react(rel, value, self._raw_write)
            else:
                self._raw_write(path, value)
        except OSError as e:
            raise KernelError(
                f"kernel refused writing {value.strip()!r} to {path}: "
                f"{os.strerror(e.errno) if e.errno else e}", e.errno) from e

    @staticmethod
    def _raw_write(path: str, value: str) -> None:
        # O_TRUNC as the shell's `>` does; sysfs ignores it, a plain file needs it.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


def _read_text(path: str, dir_fd: int | None = None) -> str | None:
    """One sysfs attribute (a page at most) without its newline; None if absent or unreadable."""
    try:
        fd = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in _ABSENT or e.errno == errno_mod.EISDIR:
            return None
        raise
    try:
        return os.read(fd, 4096).decode("utf-8", "replace").rstrip("\n")
    except OSError as e:
        if e.errno in _ABSENT or e.errno == errno_mod.EISDIR:
            return None
        raise
    finally:
        os.close(fd)
