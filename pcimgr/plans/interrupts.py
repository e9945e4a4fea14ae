"""SIGINT and SIGTERM during a change are failures like any other: they raise Interrupted
where the program is, so that the transaction rolls back and says so (docs/plans.md).

While a rollback (or recovery) runs, the signals are held back: a second Ctrl-C must not
leave the host half-restored. A signal that arrived meanwhile is raised afterwards.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from pcimgr.core.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_held: list[int] | None = None  # signals that arrived while shielded; None: not shielded


def _handler(signum: int, frame: FrameType | None) -> None:
    if _held is not None:
        _held.append(signum)
        return
    raise Interrupted(signum)


def install() -> None:
    """From here on, SIGINT and SIGTERM raise Interrupted (main thread only)."""
    for s in SIGNALS:
        signal.signal(s, _handler)


@contextmanager
def shielded() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the block; raise the first that came once it is done
    (unless the block is already raising)."""
    global _held
    if _held is not None:  # nested: the outer block delivers
        yield
        return
    _held = []
    try:
        yield
    finally:
        came, _held = _held, None
    if came:
        raise Interrupted(came[0])
