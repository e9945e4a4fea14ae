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
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def possible() -> bool:
    """A second CPU to run on, and no thread that a fork would leave half-copied."""
    return (hasattr(os, "fork") and len(os.sched_getaffinity(0)) > 1
            and threading.active_count() == 1)


def read(reader: Callable[[list[str]], list[T]], names: list[str]) -> list[T]:
    """reader(names), the second half of names read by a forked child."""
    half = len(names) // 2
    mine, theirs = names[:half], names[half:]
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return reader(names)
    if pid == 0:  # the child: never returns, never runs the parent's exit handlers
        status = 1
        try:
            # the parent's handlers (a transaction's rollback on SIGINT) are not its own
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.close(r)
            with os.fdopen(w, "wb") as out:
                pickle.dump(reader(theirs), out, protocol=pickle.HIGHEST_PROTOCOL)
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    status, reaped = -1, False
    with os.fdopen(r, "rb") as pipe:
        try:
            found = reader(mine)
            data = pipe.read()
            status = os.waitpid(pid, 0)[1]
            reaped = True
        finally:
            if not reaped:  # leaving on an exception (Ctrl-C): the child goes too
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    received: list[T] | None = None
    if status == 0:
        try:
            received = pickle.loads(data)
        except (pickle.UnpicklingError, EOFError, ValueError):
            received = None
    return found + (received if received is not None else reader(theirs))
