"""The records a change leaves in STATE_DIR: each function's original driver
(devices/<address>.json) and each assignment (assignments/<address>.json).

They are read through the state-file loader (shape checked, the file and the fix
named when damaged), and written by `commit` as one all-or-nothing batch after
the last step and before the journal goes: a kill leaves either the journal
(the next run undoes the change) or the change with its records, never a function
on vfio-pci without the record of the driver it came from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from pcimgr.plans import statefile
from pcimgr.core.errors import PcimgrError

RECORD_FIX = ("check which driver the function had before pcimgr moved it, then remove the "
              "file (`pcimgr rebind` then lets the kernel pick the native driver)")
ASSIGNMENT_FIX = "check which guest has the function (`virsh dumpxml`), then remove the file"


def device_rel(address: str) -> str:
    """The original-driver record's path relative to the state directory."""
    return f"devices/{address}.json"


def device_path(state: str, address: str) -> str:
    return os.path.join(state, device_rel(address))


def _driver_shape(data: Any) -> dict[str, Any]:
    return statefile.obj(data, driver=(str, type(None)), override=(str, type(None)))


def _assignment_shape(data: Any) -> dict[str, Any]:
    statefile.obj(data, domain=str, uuid=str, uri=str, managed=bool, moved=list)
    if not all(isinstance(a, str) for a in data["moved"]):
        raise ValueError("'moved' lists something other than addresses")
    return data


_SHAPES = {"devices": (_driver_shape, RECORD_FIX), "assignments": (_assignment_shape,
                                                                   ASSIGNMENT_FIX)}


def load(state: str, rel: str) -> dict[str, Any] | None:
    """The record at STATE/REL (devices/... or assignments/...), None if there is none."""
    shape, fix = _SHAPES[rel.split("/", 1)[0]]
    return statefile.load(os.path.join(state, rel), shape, fix, top=state)


def load_driver(state: str, address: str) -> dict[str, Any] | None:
    return load(state, device_rel(address))


class Changes:
    """Record writes (data) and removals (None) by path relative to STATE, read-your-writes:
    a plan's record changes are worked out before its first step, so that a damaged record
    stops the change before the host is touched."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.pending: dict[str, dict[str, Any] | None] = {}

    def get(self, rel: str) -> dict[str, Any] | None:
        return self.pending[rel] if rel in self.pending else load(self.state, rel)

    def set(self, rel: str, data: dict[str, Any] | None) -> None:
        self.pending[rel] = data

    def commit(self) -> Callable[[], None]:
        """Write every change, writes first (they can fail on a full disk), then removals;
        on any failure put back what was done and raise. Returns the undo of the batch."""
        before = {rel: load(self.state, rel) for rel in self.pending}
        done: list[str] = []
        order = sorted(self.pending, key=lambda rel: self.pending[rel] is None)
        try:
            for rel in order:
                self._put(rel, self.pending[rel])
                done.append(rel)
        except BaseException:
            self._restore(done, before)
            raise
        return lambda: self._restore(done, before)

    def _put(self, rel: str, data: dict[str, Any] | None) -> None:
        path = os.path.join(self.state, rel)
        if data is None:
            statefile.remove(path, top=self.state)
        else:
            statefile.write(path, data, top=self.state)

    def _restore(self, done: Iterable[str], before: dict[str, dict[str, Any] | None]) -> None:
        for rel in reversed(list(done)):
            try:
                self._put(rel, before[rel])
            except (OSError, PcimgrError):
                pass  # best effort: the rollback that follows says what state the host is in
