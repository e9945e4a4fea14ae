"""Plans: ordered steps applied with a journal, rolled back in reverse when one fails.

The journal (STATE_DIR/journal.json) is written before the first step and as each
step starts, so a process killed half-way leaves enough for the next run to undo what
it did (`recover`) before doing anything else. Any failure while the plan runs — a step,
a journal write (ENOSPC, EIO), the records that must follow the change, SIGINT or
SIGTERM — rolls back every started step: exit 0 means complete and recorded.
"""

from __future__ import annotations

import os
import re
import time
import typing
from collections.abc import Callable
from dataclasses import fields
from typing import Any, NamedTuple

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import (
    BadInput,
    Damaged,
    Interrupted,
    NeedsRoot,
    PcimgrError,
    Refused,
    RolledBack,
)
from pcimgr.core.mdev import is_uuid
from pcimgr.host.machine import Machine
from pcimgr.plans import interrupts, records, statefile
from pcimgr.plans.pending import JOURNAL, journal_path
from pcimgr.plans.step import Step, from_json

INCOMPLETE = "ROLLBACK INCOMPLETE"  # in a report: some function is not as it was
RECOVER_FIX = ("`pcimgr recover --dry-run` shows what it names, `pcimgr recover --discard` "
               "forgets it once you have checked those functions (`pcimgr list --all`)")


# NamedTuples, not frozen dataclasses: the same immutable values with equality, made ~5x
# faster at import (each dataclass costs ~15 ms of a change's start in the emulated lab)
class Plan(NamedTuple):
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


Progress = Callable[[int, int, "Step"], None]


def execute(plan: Plan, machine: Machine, state_dir: str, progress: Progress | None = None,
            changes: records.Changes | None = None) -> None:
    """Apply every step; progress(done, total, step) after each one; then the record
    changes, journaled with the records' earlier content; RolledBack on failure."""
    path = journal_path(state_dir)
    entries = [{"step": s.to_json(), "state": "pending"} for s in plan.steps]
    journal = {"command": plan.command, "pid": os.getpid(), "started": time.time(),
               "steps": entries}
    started = 0  # steps that may have changed the host: undone on failure
    where = "writing the journal"
    committing = False
    try:
        statefile.write(path, journal, readable=False, top=state_dir)
        for i, step in enumerate(plan.steps):
            where = f"step {i + 1} ({step.address})"
            entries[i]["state"] = "applying"
            statefile.write(path, journal, readable=False, top=state_dir)
            started = i + 1
            step.apply(machine)
            # no write of its own: recovery undoes an "applying" step as it does an "applied"
            # one, so the next write (the next step's, or the records') carries it
            entries[i]["state"] = "applied"
            if progress is not None:
                progress(i + 1, len(plan.steps), step)
        where = "recording the original drivers"
        if changes is not None and changes.pending:
            journal["records"] = changes.before  # what recovery puts back
            statefile.write(path, journal, readable=False, top=state_dir)
            committing = True
            with interrupts.shielded():  # all records or none
                changes.commit()
        where = "removing the journal"
        statefile.remove(path, top=state_dir)
    except (PcimgrError, OSError) as failure:
        with interrupts.shielded(deliver=False):
            lost = changes.undo() if committing and changes is not None else []
            report = roll_back(plan.steps[:started], machine)
            if lost:
                report += f"; records not restored: {', '.join(lost)} (check them by hand)"
            try:
                statefile.remove(path, top=state_dir)
            except (PcimgrError, OSError) as e:
                report += f"; the journal {path} stays ({_why(e)}): the next run undoes it again"
        if started == 0 and isinstance(failure, NeedsRoot):
            raise  # the state directory is out of reach: nothing was done, say only that
        what = (f"interrupted by {failure.signame} at {where}" if isinstance(failure, Interrupted)
                else f"failed at {where}: {_why(failure)}")
        raise RolledBack(f"{plan.command} {what}; {report}") from failure


def _why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f" ({e.filename})" if e.filename else "")
    return str(e)


# -- the journal read back ---------------------------------------------------------------

class Unfinished(NamedTuple):
    """A journal a killed run left: its command, pid and the steps it had started."""

    command: str
    pid: int
    started: tuple[Step, ...]
    records: dict[str, Any]  # relative path -> content before the change (None: none)


REFUSED_FIX = ("inspect it (`pcimgr recover --dry-run`) and, unless a pcimgr run of yours left "
               "it, check the functions it names and remove it (`pcimgr recover --discard`)")


def read_journal(state_dir: str) -> Unfinished | None:
    """The journal left behind, None if there is none; Damaged naming `pcimgr recover`, also
    for one that is not root's (or this user's) alone: only pcimgr writes it, mode 0600."""
    path = journal_path(state_dir)
    _check_owner(path, state_dir)
    return statefile.load(path, _journal_shape, RECOVER_FIX, top=state_dir)


def _check_owner(path: str, state_dir: str) -> None:
    """Damaged unless the journal is a regular file of root or this user that nobody else
    may write or read: a journal someone else could have written is a script for root."""
    why = statefile.untrusted(state_dir, JOURNAL)
    if why:
        raise Damaged(f"refusing the journal {path}: {why}; {REFUSED_FIX}")


def _journal_shape(data: Any) -> Unfinished:
    statefile.obj(data, command=str, pid=int, steps=list)
    if not data["command"].isprintable():  # it is shown on one line, to a terminal
        raise ValueError(f"command {data['command']!r} is not one printable line")
    started = []
    for n, entry in enumerate(data["steps"], 1):
        try:
            statefile.obj(entry, step=dict, state=str)
            if entry["state"] not in ("pending", "applying", "applied"):
                raise ValueError(f"state {entry['state']!r} is none of pending, applying, "
                                 "applied")
            if entry["state"] != "pending":
                started.append(read_step(entry["step"]))
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"step {n}: {e}") from None
    before = data.get("records", {})
    if not isinstance(before, dict):
        raise ValueError("'records' is not an object")
    return Unfinished(data["command"], data["pid"], tuple(started),
                      {rel: records.check(rel, content) for rel, content in before.items()})


def read_step(data: dict[str, Any]) -> Step:
    """A step as a journal (or a record of steps to undo later) keeps it, checked: ValueError
    naming what is wrong."""
    try:
        step = from_json(data)
    except KeyError as e:
        raise ValueError(f"{data['kind']} step without {e}") from None
    except PcimgrError as e:  # a step refusing what it was given (a libvirt URI)
        raise ValueError(f"{data['kind']} step: {e}") from None
    hints = typing.get_type_hints(type(step))
    for f in fields(step):  # type: ignore[arg-type]  # every step kind is a dataclass
        # the simple fields an undo acts on must have their types
        want = {str: (str,), int: (int,), float: (int, float), bool: (bool,),
                str | None: (str, type(None)), int | None: (int, type(None))}.get(hints[f.name])
        value = getattr(step, f.name)
        if want is not None and (not isinstance(value, want)
                                 or (isinstance(value, bool) and bool not in want)):
            raise ValueError(f"{data['kind']} field {f.name!r} is {value!r}")
    try:
        if not is_uuid(step.address):  # an mdev's steps name it by its UUID
            PciAddress.parse(step.address)
    except BadInput:
        raise ValueError(f"{data['kind']} step names no PCI address: {step.address!r}") from None
    try:
        moves, removes, netdevs = step.undo_moves(), step.undo_removes(), step.undo_netdevs()
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{data['kind']} step: malformed ({e!r})") from None
    for address, driver in moves:
        if not (driver is None or isinstance(driver, str)):
            raise ValueError(f"{data['kind']} step moves {address!r} to {driver!r}")
    for _, netdev, down in netdevs:
        if not isinstance(netdev, str) or not isinstance(down, bool):
            raise ValueError(f"{data['kind']} step acts on interface {netdev!r}")
    for address in [a for a, _ in moves] + list(removes) + [a for a, _, _ in netdevs]:
        try:
            PciAddress.parse(address if isinstance(address, str) else "")
        except BadInput:
            raise ValueError(f"{data['kind']} step acts on no PCI address: {address!r}") from None
    return step


# Checks the started steps' undo as a fresh plan would be checked (the drivers' safety rules,
# the host-dependency survey): raises a PcimgrError naming what it refuses. It comes from
# the front end, since the engine knows no feature.
Vet = Callable[[tuple[Step, ...]], None]


def recover(machine: Machine, state_dir: str, vet: Vet) -> str | None:
    """Undo an unfinished transaction left by a killed run; a sentence saying so, or None.
    Nothing is undone unless vet accepts every started step: Damaged naming the journal."""
    unfinished = read_journal(state_dir)
    if unfinished is None:
        return None
    check(unfinished, state_dir, vet)
    with interrupts.shielded():
        lost = records.restore(state_dir, unfinished.records)
        report = roll_back(unfinished.started, machine)
        if lost:
            report += f"; records not restored: {', '.join(lost)} (check them by hand)"
        statefile.remove(journal_path(state_dir), top=state_dir)
    return (f"found an unfinished `{unfinished.command}` (pid {unfinished.pid}) and undid its "
            f"{len(unfinished.started)} started step(s): {report}")


def check(unfinished: Unfinished, state_dir: str, vet: Vet) -> None:
    """Damaged (one line: the journal, why, what to do) when vet refuses its undo."""
    try:
        vet(unfinished.started)
    except PcimgrError as e:
        forced = isinstance(e, Refused) and e.forceable
        raise Damaged(f"refusing the journal {journal_path(state_dir)}: undoing "
                      f"`{unfinished.command}` {e.problem if isinstance(e, Refused) else e}; "
                      + REFUSED_FIX + ("; or, if the host can really do without them, "
                                       "`pcimgr recover --force` undoes it" if forced else ""))\
            from None


def discard(state_dir: str) -> None:
    """Forget the journal without undoing anything (`pcimgr recover --discard`)."""
    statefile.remove(journal_path(state_dir), top=state_dir)


def addresses_in(text: str) -> list[str]:
    """The PCI addresses a damaged journal still names, for the person who must check them."""
    return sorted(set(re.findall(r"\b[0-9a-fA-F]{4,}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\b",
                                 text)))


def roll_back(steps: tuple[Step, ...], machine: Machine) -> str:
    """Undo each step in reverse, going on past one that fails; the report says which."""
    failed = []
    for step in reversed(steps):
        try:
            step.undo(machine)
        except Exception as e:  # noqa: BLE001 - one undo that cannot run must not end the
            failed.append(f"{step.address} ({e})")  # rollback of the others: reported
    if failed:
        return f"{INCOMPLETE}, restore by hand: " + "; ".join(failed)
    return "rolled back: the host is as it was before"
