"""The split read under a stopped child and a signal at the fork (host/halves.py)."""

from __future__ import annotations

import os
import signal

import pytest

from pcimgr.host import halves


def _stopping_reader(parent: int):  # type: ignore[no-untyped-def]
    def reader(names: list[str]) -> list[str]:
        if os.getpid() != parent:  # the child: stopped as by SIGSTOP or a frozen cgroup
            os.kill(os.getpid(), signal.SIGSTOP)
        return [n.upper() for n in names]
    return reader


def test_a_stopped_child_is_killed_and_its_half_read_here() -> None:
    names = [f"f{i}" for i in range(10)]
    got = halves.read(_stopping_reader(os.getpid()), names, grace=0.2)
    assert got == [n.upper() for n in names]
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(-1, os.WNOHANG)


class Interrupted(Exception):
    pass


def test_sigterm_right_after_the_fork_reaches_the_parent_only(mocker) -> None:  # type: ignore[no-untyped-def]
    """The signal is held over the fork: the parent's handler runs once, in the parent,
    and the child (which never saw it) is killed and reaped."""
    real_fork = os.fork
    parent = os.getpid()
    seen: list[int] = []

    def fork_then_signal() -> int:
        pid = real_fork()
        if pid:
            os.kill(parent, signal.SIGTERM)
        return pid

    def handler(signum: int, frame: object) -> None:
        seen.append(os.getpid())
        raise Interrupted

    old = signal.signal(signal.SIGTERM, handler)
    try:
        mocker.patch.object(halves.os, "fork", side_effect=fork_then_signal)
        with pytest.raises(Interrupted):
            halves.read(lambda names: list(names), [f"f{i}" for i in range(10)])
    finally:
        signal.signal(signal.SIGTERM, old)
    assert seen == [parent]
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
