"""Plans: ordered steps applied with a journal, rolled back in reverse when one fails.

The journal (STATE_DIR/journal.json) is written before and after every step, so
a process killed half-way leaves enough for the next run to undo what it did
(`recover`) before doing anything else.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pcimgr import statefile
from pcimgr.errors import PcimgrError, RolledBack
from pcimgr.sysfs import Sysfs

if TYPE_CHECKING:  # every step module: imported only when a journal is read back
    from pcimgr.steps import Step

@dataclass(frozen=True)
class Plan:
    command: str
    steps: tuple[Step, ...]

    def describe(self) -> str:
        if not self.steps:
            return "Nothing to do."
        lines = []
        for n, step in enumerate(self.steps, 1):
            lines.append(f"{n}. {step.summary()}")
            lines += [f"     {w}" for w in step.describe()]
        return "\n".join(lines)


def journal_path(state_dir: str) -> str:
    return os.path.join(state_dir, "journal.json")


Progress = Callable[[int, int, "Step"], None]


def execute(plan: Plan, sysfs: Sysfs, state_dir: str, progress: Progress | None = None) -> None:
    """Apply every step; progress(done, total, step) after each one."""
    path = journal_path(state_dir)
    entries = [{"step": s.to_json(), "state": "pending"} for s in plan.steps]
    journal = {"command": plan.command, "pid": os.getpid(), "started": time.time(),
               "steps": entries}
    statefile.write(path, journal, readable=False)
    for i, step in enumerate(plan.steps):
        entries[i]["state"] = "applying"
        statefile.write(path, journal, readable=False)
        try:
            step.apply(sysfs)
        except (PcimgrError, OSError) as failure:
            report = _roll_back(plan.steps[:i + 1], sysfs)
            statefile.remove(path)
            raise RolledBack(f"{plan.command} failed at step {i + 1} ({step.address}: {failure}); "
                             f"{report}") from failure
        entries[i]["state"] = "applied"
        statefile.write(path, journal, readable=False)
        if progress is not None:
            progress(i + 1, len(plan.steps), step)
    statefile.remove(path)


def recover(sysfs: Sysfs, state_dir: str) -> str | None:
    """Undo an unfinished transaction left by a killed run; a sentence saying so, or None."""
    path = journal_path(state_dir)
    journal = statefile.read(path)
    if journal is None:
        return None
    from pcimgr.steps import from_json
    started = [from_json(e["step"]) for e in journal["steps"] if e["state"] != "pending"]
    report = _roll_back(tuple(started), sysfs)
    statefile.remove(path)
    return (f"found an unfinished `{journal['command']}` (pid {journal['pid']}) and undid its "
            f"{len(started)} started step(s): {report}")


def _roll_back(steps: tuple[Step, ...], sysfs: Sysfs) -> str:
    failed = []
    for step in reversed(steps):
        try:
            step.undo(sysfs)
        except (PcimgrError, OSError) as e:
            failed.append(f"{step.address} ({e})")
    if failed:
        return ("ROLLBACK INCOMPLETE, restore by hand: " + "; ".join(failed))
    return "rolled back: the host is as it was before"
