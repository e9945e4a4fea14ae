"""Saying that a long wait goes on: "waiting for WHAT (N s)" once every NOTICE_EVERY
seconds, never a line per poll. The front end chooses where it goes (the CLI: stderr, on a
terminal only) with `notify_to`; by default nobody is told. Light on purpose: a wait's
module imports it, a read command never pays for it."""

from __future__ import annotations

import time
from collections.abc import Callable

NOTICE_EVERY = 3.0  # seconds between two lines about one wait; the first after as long

Notice = Callable[[str], None]
_notice: Notice | None = None


def notify_to(notice: Notice | None) -> None:
    """Where the lines go from now on (None: nowhere)."""
    global _notice
    _notice = notice


class Patience:
    """One wait: tick() as often as it re-checks; it says so when a line is due."""

    def __init__(self, what: str, clock: Callable[[], float] | None = None) -> None:
        self.what = what
        self._clock = clock or time.monotonic
        self._start = self._clock()
        self._due = self._start + NOTICE_EVERY

    def tick(self) -> None:
        if _notice is None:
            return
        now = self._clock()
        if now >= self._due:
            _notice(f"waiting for {self.what} ({now - self._start:.0f} s)")
            self._due = now + NOTICE_EVERY
