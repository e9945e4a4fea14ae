"""One write's reaction, all or nothing: an undo log the next access completes.

A real kernel finishes a sysfs store before the writer sees a signal, and its reaction
lives in memory: a killed writer leaves the store done or not started. The simulated
kernel's reaction is dozens of file operations, so each one first appends its inverse to
UNDO_DIR/log: a create is undone by a removal, an overwrite by the old bytes, a removal
by moving the entry back from UNDO_DIR, where it was moved instead of deleted. On success
the log goes (the commit point), then the directory; on an error (a full disk) the
inverses run at once; after SIGKILL the next process that opens the tree runs them
(recover; opening checks only that the directory is there). Inverses are idempotent and
the inverse of an operation that never ran is harmless, so an undo itself killed half-way
is simply run again. Signals that a handler turns into an exception wait until the
reaction is over, as the kernel's store completes before the writer sees one.

Only the simulator writes through here; the builder's operations, outside a reaction,
are plain file operations.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
from collections.abc import Iterator

from pcimgr.core.errors import NeedsRoot
from pcimgr.sim.marker import UNDO_DIR

LOG = "log"
LOCK = ".pcimgr-sim-kernel.lock"
_HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class _Log:
    def __init__(self, root: str, fd: int) -> None:
        self.root = root
        self.fd = fd
        self.discarded = 0
        # directories this reaction made: undoing their creation removes what is inside,
        # so nothing below them needs a record (a new VF's dozens of files cost none)
        self.created: set[str] = set()

    def append(self, entry: dict[str, str | None]) -> None:
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        # one write(2) on an O_APPEND file: a kill cannot tear it; a short write (a full
        # disk) is refused before the operation it guards, and its torn line is skipped
        if os.write(self.fd, line) != len(line):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                          os.path.join(self.root, UNDO_DIR, LOG))

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)


_active: _Log | None = None


@contextlib.contextmanager
def atomic(root: str) -> Iterator[None]:
    """Run the block as one reaction of the simulated kernel to ROOT."""
    global _active
    if _active is not None:  # a reaction that causes another (a probe after a bind)
        yield
        return
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        with _locked(root):
            _undo(root)  # a reaction a kill cut short, not yet completed by a reader
            os.mkdir(os.path.join(root, UNDO_DIR), 0o700)
            fd = os.open(os.path.join(root, UNDO_DIR, LOG),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o600)
            _active = _Log(root, fd)
            try:
                yield
            except BaseException:
                _active = None
                os.close(fd)
                with contextlib.suppress(OSError):  # else left for the next access
                    _undo(root)
                raise
            _active = None
            os.close(fd)
            os.unlink(os.path.join(root, UNDO_DIR, LOG))  # the commit point
            # the write has happened: trash the next opening can sweep is no error of it
            shutil.rmtree(os.path.join(root, UNDO_DIR), ignore_errors=True)
    finally:
        _active = None
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def recover(root: str) -> None:
    """Complete (undo) a reaction a kill cut short, before anything reads the tree."""
    if not os.access(root, os.W_OK):
        raise NeedsRoot(f"the simulated host {root} was killed in the middle of a change; "
                        f"run any pcimgr command on it as its owner (uid "
                        f"{os.stat(root).st_uid}) to finish undoing it")
    with _locked(root):
        _undo(root)


@contextlib.contextmanager
def _locked(root: str) -> Iterator[None]:
    """Reactions and their recovery one at a time, across processes (as the kernel's
    device lock): a reader must not undo a reaction another process is making."""
    fd = os.open(os.path.join(root, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                 | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _undo(root: str) -> None:
    if not os.path.lexists(os.path.join(root, UNDO_DIR)):
        return
    log = os.path.join(root, UNDO_DIR, LOG)
    try:
        with open(log, "rb") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:  # committed: only the trash is left
        shutil.rmtree(os.path.join(root, UNDO_DIR))
        return
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            break  # the torn last line of a full disk: its operation never ran
    for entry in reversed(entries):
        _inverse(root, entry)
    os.unlink(log)
    shutil.rmtree(os.path.join(root, UNDO_DIR), ignore_errors=True)


def _inverse(root: str, entry: dict[str, str | None]) -> None:
    path = os.path.join(root, str(entry["path"]))
    op = entry["op"]
    if op == "remove":  # it was created
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    elif op == "restore":  # it was overwritten
        data = bytes.fromhex(str(entry["data"]))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # no truncate in place: the old bytes in a new file
        with open(path, "wb") as f:
            f.write(data)
    elif op == "back":  # it was moved to the trash
        kept = os.path.join(root, UNDO_DIR, str(entry["trash"]))
        if os.path.lexists(kept):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
            os.rename(kept, path)


# -- the operations the simulated kernel makes ---------------------------------------------

def _tracking(path: str) -> _Log | None:
    """The reaction that must record an operation on PATH, if any."""
    if _active is None or os.path.dirname(path) in _active.created:
        return None
    return _active


def _before_write(path: str) -> None:
    log = _tracking(path)
    if log is None:
        return
    try:
        with open(path, "rb") as f:
            old: str | None = f.read().hex()
    except FileNotFoundError:
        old = None
    if old is None:
        log.append({"op": "remove", "path": log.rel(path)})
    else:
        log.append({"op": "restore", "path": log.rel(path), "data": old})


def before_write(path: str) -> None:
    """PATH is about to be written by someone else's code (the production write)."""
    _before_write(path)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def write_bytes(path: str, data: bytes) -> None:
    _before_write(path)
    with open(path, "wb") as f:
        f.write(data)


def mkdir(path: str) -> None:
    log = _tracking(path)
    if log is not None:
        log.append({"op": "remove", "path": log.rel(path)})
    os.mkdir(path)
    if _active is not None:
        _active.created.add(path)


def makedirs(path: str, exist_ok: bool = False) -> None:
    """os.makedirs, each directory it creates undone by its removal."""
    if os.path.isdir(path):
        if exist_ok:
            return
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        makedirs(parent, exist_ok=True)
    mkdir(path)


def symlink(target: str, link: str) -> None:
    log = _tracking(link)
    if log is not None:
        log.append({"op": "remove", "path": log.rel(link)})
    os.symlink(target, link)


def discard(path: str) -> None:
    """Remove a file, a link or a whole directory: moved aside, so that undo moves it back."""
    log = _tracking(path)
    if log is None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        return
    if not os.path.lexists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    log.discarded += 1
    name = str(log.discarded)
    log.append({"op": "back", "path": log.rel(path), "trash": name})
    os.rename(path, os.path.join(log.root, UNDO_DIR, name))
