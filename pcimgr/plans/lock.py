"""One lock per host serialises every command that changes the host, its state or its
definitions; readers never take it.

The lock belongs to the host, not to a state directory: two runs with different
--state-dir values still change the same functions, so they must wait for each
other. The real host's lock is /run/pcimgr/lock (tmpfs: gone at reboot, as is every
holder); a simulated host's is inside its root (Machine.lock_dir). The file is created
once and kept:
an flock file carries no content, and removing it would let a process that still
holds the old inode and one that creates a new file both believe they hold the lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pcimgr.core.errors import Busy, Damaged
from pcimgr.host.waiting import Patience
from pcimgr.plans import statefile

DEFAULT_WAIT = 30.0
DONE, TAKEN, WAITING = "done", "taken", "waiting"


def made(lock_dir: str) -> bool:
    """Has a run made the host's lock file yet? Until one has, a change checks its plan
    before taking the lock, so that a refused command creates no file at all."""
    return os.path.lexists(os.path.join(lock_dir, "lock"))


@contextmanager
def exclusive(lock_dir: str, wait: float = DEFAULT_WAIT,
              served: Callable[[], str] | None = None) -> Iterator[bool]:
    """flock(LOCK_EX) on LOCK_DIR/lock, polling up to `wait` seconds, then Busy; yields True.

    served (a request the holder may do for us, plans/requests.py), asked at each poll:
    DONE ends the wait without the lock (yields False); TAKEN (the holder is doing it)
    restarts the `wait` seconds; WAITING waits on."""
    path = os.path.join(lock_dir, "lock")
    with statefile.directory(lock_dir, create=True) as dfd:
        assert dfd is not None  # created
        try:
            fd = os.open("lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dfd)
        except PermissionError:
            raise statefile.denied(path, "no permission to open the lock") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise statefile.not_followed(path) from None
            if e.errno == errno.EISDIR:
                raise Damaged(f"the lock {path} is a directory, not pcimgr's lock file; "
                              "remove it (no pcimgr holds it) and retry") from None
            raise statefile.unusable(path, e) from None
    try:
        deadline = time.monotonic() + wait
        patience = Patience(f"another pcimgr to release {path}")
        now = WAITING
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise statefile.unusable(path, e) from None
                now = served() if served is not None else WAITING
                if now == DONE:
                    break
                if now == TAKEN:
                    deadline = time.monotonic() + wait
                elif time.monotonic() >= deadline:
                    raise Busy(f"another pcimgr is changing this host (lock {path} held for "
                               f"over {wait:g} s); wait for it to finish and retry") from None
                patience.tick()
                time.sleep(0.05 if served is None else 0.01)  # a served run exits promptly
        yield now != DONE
    finally:
        os.close(fd)  # closing releases the lock, also when the process dies
