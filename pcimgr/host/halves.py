"""Read a long list in two processes: a forked child reads the second half.

Reading thousands of sysfs functions is system calls and parsing, bound by one CPU;
with a second CPU free, a child forked after the imports reads half and sends what it
read back pickled through a pipe (~6 us per function to pickle and unpickle). If the
child fails in any way (killed, no memory, a full pipe's reader gone) its half is read
here: a split read never knows less than a serial one.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def possible() -> bool:
    """A second CPU to run on, and no thread that a fork would leave half-copied."""
    return (hasattr(os, "fork") and len(os.sched_getaffinity(0)) > 1
            and threading.active_count() == 1)


def read(reader: Callable[[list[str]], list[T]], names: list[str],
         grace: float = 2.0) -> list[T]:
    """reader(names), the second half of names read by a forked child.

    The child gets at most grace seconds, or four times what the parent's half took if
    that is longer, beyond the parent's half: a child that is stopped (SIGSTOP, a frozen
    cgroup) is killed and its half read here."""
    half = len(names) // 2
    mine, theirs = names[:half], names[half:]
    r, w = os.pipe()
    # A signal between fork and the handlers' reset would run the parent's handler in the
    # child (a traceback, a rollback there): both are held until each side is ready.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.close(r)
        os.close(w)
        return reader(names)
    if pid == 0:  # the child: never returns, never runs the parent's exit handlers
        status = 1
        try:
            # the parent's handlers (a transaction's rollback on SIGINT) are not its own
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            os.close(r)
            with os.fdopen(w, "wb") as out:
                pickle.dump(reader(theirs), out, protocol=pickle.HIGHEST_PROTOCOL)
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    data, reaped, ok = b"", False, False
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        started = time.monotonic()
        found = reader(mine)
        now = time.monotonic()
        deadline = now + max(grace, 4 * (now - started))
        data = _drain(r, deadline)
        reaped, ok = _reaped(pid, deadline)
    finally:
        os.close(r)
        if not reaped:  # late, stopped, or we leave on an exception (Ctrl-C): it goes
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    received: list[T] | None = None
    if ok and data:
        try:
            received = pickle.loads(data)
        except (pickle.UnpicklingError, EOFError, ValueError):
            received = None
    return found + (received if received is not None else reader(theirs))


def _drain(fd: int, deadline: float) -> bytes:
    """What the pipe holds until its writer closes it, or b"" at the deadline."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b""
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reaped(pid: int, deadline: float) -> tuple[bool, bool]:
    """(reaped, exited with status 0): the child's end, waited for until the deadline."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return True, status == 0
        if time.monotonic() >= deadline:
            return False, False
        time.sleep(0.005)
