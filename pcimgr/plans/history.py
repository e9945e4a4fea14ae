"""What pcimgr changed on this host: the last changes, each with its steps and result, kept in
STATE_DIR/history.json (`pcimgr history`) and told to the system log by the machine.

The history is a record, not a precondition: a change that succeeded is not undone because
its entry could not be written (a full disk, a damaged file); it says so on stderr.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

from pcimgr.core.errors import PcimgrError
from pcimgr.plans import statefile

if TYPE_CHECKING:
    from pcimgr.host.machine import Machine
    from pcimgr.plans.transaction import Plan

KEEP = 200
FIX = "remove it (pcimgr starts a new history; the host is not affected)"
RESULTS = ("done", "rolled back", "recovered")


def path(state: str) -> str:
    return os.path.join(state, "history.json")


def _shape(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise ValueError("not a list of changes")
    for entry in data:
        statefile.obj(entry, time=str, command=str, result=str, steps=list, detail=str)
        if entry["result"] not in RESULTS:
            raise ValueError(f"result {entry['result']!r} is none of {', '.join(RESULTS)}")
    return data


def load(state: str) -> list[dict[str, Any]]:
    """Oldest first; Damaged naming the file when it is not what pcimgr writes."""
    return statefile.load(path(state), _shape, FIX, top=state) or []


def add(machine: Machine, state: str, plan: Plan, result: str, detail: str = "") -> None:
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": plan.command,
             "result": result, "steps": [s.summary() for s in plan.steps], "detail": detail,
             "uid": os.getuid()}
    _add(machine, state, entry)


def recovered(machine: Machine, state: str, message: str) -> None:
    _add(machine, state, {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": "recover",
                          "result": "recovered", "steps": [], "detail": message,
                          "uid": os.getuid()})


def _add(machine: Machine, state: str, entry: dict[str, Any]) -> None:
    steps = "; ".join(entry["steps"])
    machine.system_log(f"{entry['command']}: {entry['result']}"
                       + (f": {steps}" if steps else "")
                       + (f" ({entry['detail']})" if entry["detail"] else ""),
                       {"PCIMGR_COMMAND": entry["command"], "PCIMGR_RESULT": entry["result"],
                        "PCIMGR_STEPS": steps, "PCIMGR_DETAIL": entry["detail"],
                        "PCIMGR_UID": str(entry["uid"])})
    try:
        kept = load(state)[-(KEEP - 1):]
        statefile.write(path(state), kept + [entry], top=state)
    except (PcimgrError, OSError) as e:
        sys.stderr.write(f"pcimgr: warning: the change is {entry['result']}, but not recorded "
                         f"in {path(state)}: {e}\n")
