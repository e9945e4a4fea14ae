"""install-udev's writes: the rules and units below the system root, all or nothing.

Every directory from the root down is opened without following a symbolic link (a link
at etc/udev could point anywhere: the host's real /etc from a simulated host, a user's
files from root's), and a link in the way is refused before anything is written. Each
file is written atomically (a temporary, fsync, rename); when one fails, or
a signal arrives, the files already written are put back byte for byte (removed if they
were new, with the directories made for them) and the run says so in one line.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from pcimgr.core.errors import KernelError, PcimgrError, Refused, RolledBack
from pcimgr.persist import udev
from pcimgr.plans import interrupts, statefile

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class _Was:
    """A file before the install: its bytes and mode (None: absent), and the first of its
    directories that did not exist (removed again on rollback)."""

    data: bytes | None
    mode: int
    made_dir: str | None


def install(root: str, files: list[tuple[str, str]], say: Callable[[str], None]) -> None:
    """Write each (path below root, text); Refused before the first write when a path
    passes through a link or lands on something not a regular file; RolledBack when a
    write fails or is interrupted, with every file as it was."""
    root = os.path.abspath(root)
    before = [_look(root, rel) for rel, _ in files]
    _sweep(root, [rel for rel, _ in files])
    done: list[int] = []
    try:
        for i, (rel, text) in enumerate(files):
            done.append(i)
            _write(root, rel, text.encode(), before[i].mode)
    except (OSError, PcimgrError, KeyboardInterrupt) as err:  # Ctrl-C: Interrupted, or
        path = os.path.join(root, files[done[-1]][0])         # before its handler
        why = (err.strerror or str(err)) if isinstance(err, OSError) else (
            str(err) or "interrupted")
        with interrupts.shielded(deliver=False):
            _put_back(root, [(files[i][0], before[i]) for i in reversed(done)], path, why)
        raise RolledBack(f"writing {path} failed ({why}); rolled back: the udev rules and "
                         "units are as they were") from err
    for rel, _ in files:
        say(f"wrote {os.path.join(root, rel)}")


def _look(root: str, rel: str) -> _Was:
    """What is at root/rel now, every component opened without following a link."""
    parts = rel.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for n, part in enumerate(parts[:-1]):
            try:
                new = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                return _Was(None, 0o644, "/".join(parts[:n + 1]))
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _refused(root, "/".join(parts[:n + 1])) from None
                raise
            os.close(fd)
            fd = new
        try:
            info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return _Was(None, 0o644, None)
        if not stat.S_ISREG(info.st_mode):
            raise _refused(root, rel)
        with open(os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd),
                  "rb") as f:
            return _Was(f.read(), stat.S_IMODE(info.st_mode), None)
    finally:
        os.close(fd)


def _refused(root: str, rel: str) -> Refused:
    path = os.path.join(root, rel)
    kind = "a symbolic link" if os.path.islink(path) else "not a " + (
        "regular file" if os.path.exists(path) and not os.path.isdir(path) else "directory")
    return Refused(f"{path} is {kind}: install-udev writes only real files below {root}, "
                   "never through links; replace it with a real directory or file, and run "
                   "install-udev again (nothing was written)")


def _sweep(root: str, rels: list[str]) -> None:
    """Remove the temporaries a killed install left next to its own files (statefile's
    NAME.tmp.PID; no other file in those directories is touched)."""
    for rel in rels:
        directory, name = os.path.split(rel)
        own = re.compile(re.escape(name) + r"\.tmp\.[0-9]+")
        with statefile.directory(root, directory) as dfd:
            if dfd is None:
                continue
            for entry in os.listdir(dfd):
                if own.fullmatch(entry):
                    _unlink(entry, dfd)


def _write(root: str, rel: str, data: bytes, mode: int) -> None:
    """data as root/rel exactly: NAME.tmp.PID, fsync, rename, fsync of the directory; the
    directories (made 0755 where missing) opened without following links."""
    directory, name = os.path.split(rel)
    tmp = f"{name}.tmp.{os.getpid()}"
    with statefile.directory(root, directory, create=True, mode=0o755) as dfd:
        assert dfd is not None  # created
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)  # nothing left behind by a full disk or a signal
            except OSError:
                pass
            raise
        os.fsync(dfd)


def _put_back(root: str, written: list[tuple[str, _Was]], path: str, why: str) -> None:
    try:
        for rel, was in written:
            if was.data is not None:
                _write(root, rel, was.data, was.mode)
            else:
                with statefile.directory(root, os.path.dirname(rel)) as dfd:
                    if dfd is not None:
                        _unlink(os.path.basename(rel), dfd)
        made = {d for rel, was in written if was.made_dir
                for d in _below(was.made_dir, os.path.dirname(rel))}
        for d in sorted(made, key=lambda d: d.count("/"), reverse=True):  # deepest first
            with statefile.directory(root, os.path.dirname(d)) as dfd:
                if dfd is not None:
                    try:
                        os.rmdir(os.path.basename(d), dir_fd=dfd)
                    except OSError as e:
                        if e.errno not in (errno.ENOTEMPTY, errno.ENOENT):
                            raise
    except (OSError, PcimgrError) as e:
        raise RolledBack(f"writing {path} failed ({why}) and putting back the files written "
                         f"before it failed too ({e}); check the udev rules and units below "
                         f"{root}") from e


def _below(top: str, leaf: str) -> list[str]:
    """top and each directory from it down to leaf ("etc/udev", "etc/udev/rules.d")."""
    rest = os.path.relpath(leaf, top).split("/")
    return [top] + ["/".join([top, *rest[:n + 1]]) for n in range(len(rest)) if rest != ["."]]


def _unlink(name: str, dfd: int) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass


def reload() -> None:
    """On the live system: udev and systemd read the new files, the boot unit is enabled."""
    _run(["udevadm", "control", "--reload"])
    if os.path.isdir("/run/systemd/system"):  # systemd is running
        _run(["systemctl", "daemon-reload"])
        _run(["systemctl", "enable", udev.UNIT_NAME])


def _run(argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        return
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise KernelError(f"`{' '.join(argv)}` failed: {r.stderr.strip()}")
