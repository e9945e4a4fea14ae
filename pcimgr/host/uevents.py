"""Waiting for the kernel to finish what a write started (VFs appearing, drivers binding).

On a real host a kernel-uevent monitor (pyudev, netlink), started when a wait
does not succeed at once, wakes it as soon as a PCI device is added, removed,
bound or unbound; where there is no udev
netlink (a simulated root, a minimal host, pyudev missing) the condition is
polled. Either way the condition is read from sysfs, so an event missed or
unrelated only costs a re-check, never a wrong answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from pcimgr.host.machine import Machine
from pcimgr.host.waiting import Patience

POLL = 0.01        # the polling fallback's period
EVENT_SLICE = 0.1  # even with a monitor, re-check this often (an event may be filtered out)


class Watcher:
    """The monitor starts only when a condition is not met at once (most sysfs writes
    finish synchronously, and importing pyudev costs a second under the emulated lab);
    the condition is re-read once it runs, so an event before the start is not lost."""

    def __init__(self, machine: Machine) -> None:
        self._can_monitor = machine.watches_uevents
        self._monitor: Any = None

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def uses_uevents(self) -> bool:
        self._start()
        return self._monitor is not None

    def _start(self) -> None:
        if self._can_monitor and self._monitor is None:
            self._monitor = _kernel_monitor()
            self._can_monitor = self._monitor is not None

    def wait(self, condition: Callable[[], bool], timeout: float,
             what: str = "the kernel") -> bool:
        """True as soon as condition() holds; False if it still does not after timeout.
        A long wait says "waiting for WHAT (N s)" every few seconds (host/waiting.py)."""
        if condition():
            return True
        self._start()
        deadline = time.monotonic() + timeout
        patience = Patience(what)
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            patience.tick()
            if self._monitor is not None:
                self._monitor.poll(timeout=min(remaining, EVENT_SLICE))
            else:
                time.sleep(min(remaining, POLL))
        return True

    def close(self) -> None:
        self._monitor = None  # pyudev closes the netlink socket when the monitor goes


def _kernel_monitor() -> Any:
    """A started pyudev monitor of kernel PCI uevents, or None where that is impossible.

    source='kernel': the events straight from the kernel; udevd's own
    re-broadcast (source='udev') needs a running udevd, which minimal hosts lack.
    """
    try:
        import pyudev
        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
        monitor.filter_by("pci")
        monitor.start()
        return monitor
    except (ImportError, OSError, ValueError):
        return None
