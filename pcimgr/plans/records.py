"""The records a change leaves in STATE_DIR: each function's original driver
(devices/<address>.json), each assignment (assignments/<address>.json) and each guest's
hand-off while it holds its devices (handoffs/<guest>.json: the steps to give back).

They are read through the state-file loader (shape checked, the file and the fix
named when damaged), and written by `commit` as one all-or-nothing batch after
the last step, once the journal holds their earlier content, and before the
journal goes: a kill leaves either the journal (the next run undoes the change and
puts the records back) or the change with its records, never a function on vfio-pci
without the record of the driver it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from pcimgr.core.errors import PcimgrError
from pcimgr.plans import statefile

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


def _handoff_shape(data: Any) -> dict[str, Any]:
    """The steps are checked by the hand-off that reads them, as a journal's are."""
    statefile.obj(data, vm=str, uuid=(str, type(None)), boot_id=str, taken=(int, float),
                  steps=list)
    if not all(isinstance(s, dict) for s in data["steps"]):
        raise ValueError("'steps' lists something other than steps")
    return data


HANDOFF_FIX = ("check which of its devices the guest still holds (`pcimgr list --all`), then "
               "`pcimgr handoff release GUEST` gives them back, or remove the file")
_SHAPES = {"devices": (_driver_shape, RECORD_FIX),
           "assignments": (_assignment_shape, ASSIGNMENT_FIX),
           "handoffs": (_handoff_shape, HANDOFF_FIX)}


_REL = re.compile(r"(devices|assignments)/[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\.json"
                  r"|handoffs/[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}\.json")


def check(rel: str, data: Any) -> dict[str, Any] | None:
    """A record as the journal keeps it (its content before a change): rel one of ours,
    data its shape or None. ValueError otherwise (the journal is damaged)."""
    if not isinstance(rel, str) or not _REL.fullmatch(rel):
        raise ValueError(f"record path {rel!r} is not one pcimgr writes")
    return None if data is None else _SHAPES[rel.split("/", 1)[0]][0](data)


def load(state: str, rel: str) -> dict[str, Any] | None:
    """The record at STATE/REL (devices/... or assignments/...), None if there is none."""
    shape, fix = _SHAPES[rel.split("/", 1)[0]]
    return statefile.load(os.path.join(state, rel), shape, fix, top=state)


def load_driver(state: str, address: str) -> dict[str, Any] | None:
    return load(state, device_rel(address))


def put(state: str, rel: str, data: dict[str, Any] | None) -> None:
    """Write the record, or remove it (None)."""
    path = os.path.join(state, rel)
    if data is None:
        statefile.remove(path, top=state)
    else:
        statefile.write(path, data, top=state)


def restore(state: str, before: Mapping[str, dict[str, Any] | None]) -> list[str]:
    """Put records back as they were; the paths that could not be (best effort: a rollback
    goes on and reports)."""
    failed = []
    for rel, data in before.items():
        try:
            put(state, rel, data)
        except (OSError, PcimgrError):
            failed.append(rel)
    return failed


class Changes:
    """Record writes (data) and removals (None) by path relative to STATE, read-your-writes.
    A plan's record changes are worked out before its first step, so that a damaged record
    stops the change before the host is touched; `before` (their content until then) goes
    into the journal ahead of the commit, so that recovering a run killed during or after
    the commit puts them back along with the host."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.pending: dict[str, dict[str, Any] | None] = {}
        self._before: dict[str, dict[str, Any] | None] = {}

    def get(self, rel: str) -> dict[str, Any] | None:
        if rel in self.pending:
            return self.pending[rel]
        if rel not in self._before:
            self._before[rel] = load(self.state, rel)
        return self._before[rel]

    def set(self, rel: str, data: dict[str, Any] | None) -> None:
        self.get(rel)  # its content before, read (and checked) now
        self.pending[rel] = data

    @property
    def before(self) -> dict[str, dict[str, Any] | None]:
        return {rel: self._before[rel] for rel in self.pending}

    def commit(self) -> None:
        """Write every change, writes first (they can fail on a full disk), then removals;
        on any failure put back what was done and raise."""
        done: list[str] = []
        try:
            for rel in sorted(self.pending, key=lambda rel: self.pending[rel] is None):
                done.append(rel)  # before: a write can fail after its rename (dir fsync)
                put(self.state, rel, self.pending[rel])
        except BaseException:
            restore(self.state, {rel: self._before[rel] for rel in reversed(done)})
            raise

    def undo(self) -> list[str]:
        return restore(self.state, self.before)
