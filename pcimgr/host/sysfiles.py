"""The host's own files below its system root (/etc/default/grub, /proc/cpuinfo, ...) and
its programs (update-grub, update-initramfs): read, listed, found and written atomically.

Both machines use it with their system root: "/" on the Linux host, the tree of a
simulated host. A path is given relative to the root ("etc/default/grub").
"""

from __future__ import annotations

import os

# where a program is looked for, below the root (the sbin directories too: an administrator's
# tools live there, and sudo's PATH has them although a user's may not)
PROGRAM_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")


def path(root: str, rel: str) -> str:
    return os.path.join(root, rel.lstrip("/"))


def read(root: str, rel: str) -> bytes | None:
    """The file's bytes; None when it does not exist."""
    try:
        with open(path(root, rel), "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def names(root: str, rel: str) -> list[str]:
    """The directory's entries, sorted; none when it does not exist."""
    try:
        return sorted(os.listdir(path(root, rel)))
    except (FileNotFoundError, NotADirectoryError):
        return []


def which(root: str, name: str) -> str | None:
    """The program's path as the host names it ("/usr/sbin/update-grub"), if it has one."""
    for d in PROGRAM_DIRS:
        p = path(root, f"{d}/{name}")
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return f"/{d}/{name}"
    return None


def write(root: str, rel: str, data: bytes, mode: int) -> None:
    """Atomically: NAME.pcimgr-tmp.PID written and synced, renamed over NAME, the directory
    synced. An existing file keeps its mode (and owner, when run as root); mode is for a new
    one. Missing directories are made (0755)."""
    target = path(root, rel)
    directory, name = os.path.split(target)
    os.makedirs(directory, 0o755, exist_ok=True)
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    tmp = os.path.join(directory, f".{name}.pcimgr-tmp.{os.getpid()}")
    try:  # from the open on: a signal right after it must not leave the temporary behind
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, st.st_mode & 0o7777 if st else mode)
            if st is not None and os.geteuid() == 0:
                os.fchown(fd, st.st_uid, st.st_gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
