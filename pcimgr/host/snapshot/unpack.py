"""Opening a snapshot file: unpacked into a private directory by rules of its own, never by
tarfile's extraction (an archive is hostile until checked: a member may not leave the
directory, a link may not point out of it, no device, FIFO or hard link, bounded sizes)."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import stat
import tarfile
import tempfile

from pcimgr.core.errors import BadInput, Damaged
from pcimgr.host.snapshot import layout

MAX_MEMBERS = 4_000_000
MAX_BYTES = 2 << 30       # all files' contents together
MAX_FILE = 64 << 20       # one file (the manifest of a host with thousands of modules)
_TOPS = frozenset({layout.MANIFEST, layout.SYS, layout.DEV, layout.SYSTEM, layout.CONFIG})
# sysfs links climb, then descend by name: "../../../devices/pci0000:00/0000:00:01.0"
_LINK = re.compile(r"((\.\./)*)([^/]+(/[^/]+)*)")


def unpack(path: str) -> str:
    """The snapshot at PATH unpacked into a new private directory (removed at exit)."""
    fd = _open_regular(path)
    target = tempfile.mkdtemp(prefix="pcimgr-snapshot-", dir=_scratch())
    atexit.register(shutil.rmtree, target, True)
    try:
        with os.fdopen(fd, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            _extract(tar, target, path)
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        shutil.rmtree(target, True)
        raise Damaged(f"{path} is not a pcimgr snapshot that can be read ({e}); take it "
                      "again with `pcimgr snapshot FILE`") from None
    except Damaged:
        shutil.rmtree(target, True)
        raise
    if not layout.has_manifest(target):
        shutil.rmtree(target, True)
        raise Damaged(f"{path} has no {layout.MANIFEST}: not a pcimgr snapshot; take one "
                      "with `pcimgr snapshot FILE`")
    return target


def _scratch() -> str | None:
    """Where to unpack: TMPDIR if set, else /dev/shm (tmpfs: creating a big host's ~100,000
    files there takes half the time it takes on a disk), else tempfile's choice. mkdtemp's
    directory is 0700 and randomly named wherever it is."""
    if os.environ.get("TMPDIR"):
        return None
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _open_regular(path: str) -> int:
    """A FIFO or a device would block or never end: only a regular file is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise BadInput(f"cannot read the snapshot {path}: {e.strerror}; give the file "
                       "`pcimgr snapshot FILE` wrote") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadInput(f"{path} is not a regular file; give the file `pcimgr snapshot FILE` "
                       "wrote")
    os.set_blocking(fd, True)
    return fd


def _extract(tar: tarfile.TarFile, target: str, source: str) -> None:
    dirs = {""}
    total = 0

    def bad(name: str, why: str) -> Damaged:
        return Damaged(f"{source}: member {name!r} {why}; not a snapshot pcimgr wrote (take "
                       "it again with `pcimgr snapshot FILE`)")

    for members, member in enumerate(tar, 1):
        if members > MAX_MEMBERS:
            raise bad(member.name, f"is past the {MAX_MEMBERS} members a snapshot may have")
        parts = member.name.rstrip("/").split("/")
        if not parts[0] or parts[0] not in _TOPS or any(p in ("", ".", "..") for p in parts):
            raise bad(member.name, "is outside the snapshot's layout")
        name = "/".join(parts)
        parent = "/".join(parts[:-1])
        if parent not in dirs:
            raise bad(member.name, "comes before its directory, or below a link or a file")
        path = os.path.join(target, name)
        if member.isdir():
            os.mkdir(path, 0o755)
            dirs.add(name)
        elif member.isreg():
            total += member.size
            if member.size > MAX_FILE or total > MAX_BYTES:
                raise bad(member.name, "is larger than a snapshot's files may be")
            data = tar.extractfile(member)
            assert data is not None  # a regular member always has its contents
            mode = 0o200 if member.mode & 0o444 == 0 else (0o644 if member.mode & 0o200
                                                          else 0o444)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(data, out)
            os.chmod(path, mode)
        elif member.issym():
            m = _LINK.fullmatch(member.linkname)
            ups = len(m[1]) // 3 if m else 0
            if m is None or any(p in (".", "..") for p in m[3].split("/")) \
                    or ups > len(parts) - 1:
                raise bad(member.name, f"is a link to {member.linkname!r}, which leaves the "
                                       "snapshot or is not a plain path")
            os.symlink(member.linkname, path)
        else:
            raise bad(member.name, "is neither a file, a directory nor a link")
