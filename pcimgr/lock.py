"""One lock serialises mutating commands; readers never take it."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pcimgr.errors import Busy

DEFAULT_WAIT = 30.0


@contextmanager
def exclusive(state_dir: str, wait: float = DEFAULT_WAIT) -> Iterator[None]:
    """flock(LOCK_EX) on STATE_DIR/lock, polling up to `wait` seconds, then Busy."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, "lock"),
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise Busy(f"another pcimgr is changing devices (lock {state_dir}/lock held "
                               f"for over {wait:g} s); wait for it to finish and retry") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock, also when the process dies
