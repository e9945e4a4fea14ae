"""Requests that combine under the host's lock.

At boot udev starts one `apply --device` per PF event (add and bind, in parallel
workers): without this, each would wait for the lock in turn and then pay for planning
and checking again. Instead a process records its request in LOCK_DIR/requests before it
waits; whoever holds the lock does every request recorded (its own and the others'),
writes each one's outcome next to it, and looks again before it lets go. A waiting
process whose outcome appears stops waiting, reports that outcome and exits: it never
plans. A request is done only by work that started after it was recorded (the holder
reads the requests at the start of each round), so an event that came during a round is
served by the next one.

Files, per request (NAME: the key and the requesting pid), each written whole (rename):
  NAME.req    what was asked (the key and the parameters that must match to combine);
  NAME.taken  the pid of the run doing it (while it does: the requester waits on);
  NAME.done   the outcome (exit code, message, the lines the request would have printed).
The requester removes its files. A request whose process is gone is removed by the next
holder (nobody waits for it); so are the files of a holder killed mid-way: its taken
requests are then done by their own processes, after the usual recovery of its journal.
The real host's lock directory is /run/pcimgr (tmpfs): nothing survives a reboot.

The directory is trusted for nothing: a process is its pid and its start time (a pid
reused by another process is not the requester), a pid beyond the kernel's limit is
nobody's, an entry that is not a regular file is ignored, and a request that does not read
back is removed (its process, if any, never reads it: it does its own under the lock).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from pcimgr.core.errors import Damaged
from pcimgr.host.machine import Machine
from pcimgr.plans import lock, statefile

if TYPE_CHECKING:
    from pcimgr.plans.transaction import Vet

DIR = "requests"
FIX = "remove it (a request is asked again by its process)"


class Request(NamedTuple):  # NamedTuples: cheap to create at import (every waiting run)
    name: str               # KEY.PID
    key: str                # what is asked for (e.g. an address)
    pid: int
    params: dict[str, Any]  # requests combine only when these are equal


class Outcome(NamedTuple):
    code: int               # the exit code
    message: str            # the error's one line ("" when it succeeded)
    lines: tuple[tuple[str, bool, str], ...]  # (stream "out"/"err", shown with --quiet, text)
    by: int                 # the pid of the run that did it
    together: int           # how many requests that run did in all


def _dir(lock_dir: str) -> str:
    return os.path.join(lock_dir, DIR)


def _path(lock_dir: str, name: str, kind: str) -> str:
    return os.path.join(_dir(lock_dir), f"{name}.{kind}")


KINDS = ("req", "taken", "done")
PID_MAX = 1 << 22  # the kernel's PID_MAX_LIMIT: a larger "pid" is no process


def record(lock_dir: str, key: str, params: dict[str, Any]) -> Request:
    """Record this process's request (before it waits for the lock)."""
    if "/" in key or key.startswith("."):
        raise ValueError(f"a request key is a file name: {key!r}")
    pid = os.getpid()
    request = Request(f"{key}.{pid}", key, pid, params)
    statefile.write(_path(lock_dir, request.name, "req"),
                    {"key": key, "pid": pid, "start": _start(pid), "params": params},
                    readable=False, top=lock_dir)
    return request


def forget(lock_dir: str, request: Request) -> None:
    """Remove this request's files (the .req first: without it the rest is an orphan any
    holder removes); what is in the way of that is no reason to fail the run."""
    for kind in KINDS:
        try:
            statefile.remove(_path(lock_dir, request.name, kind), top=lock_dir)
        except Damaged:
            pass  # a directory planted under our name: ignored by every holder


def _request_shape(data: Any) -> dict[str, Any]:
    d = statefile.obj(data, key=str, pid=int, params=dict)
    if not isinstance(d.setdefault("start", None), (int, type(None))):  # None: not known
        raise ValueError("'start' is not a number")
    return d


def _outcome_shape(data: Any) -> dict[str, Any]:
    d = statefile.obj(data, code=int, message=str, lines=list, by=int, together=int)
    for line in d["lines"]:
        if not (isinstance(line, list) and len(line) == 3 and line[0] in ("out", "err")
                and isinstance(line[1], bool) and isinstance(line[2], str)):
            raise ValueError(f"not an output line: {line!r}")
    return d


def outcome(lock_dir: str, request: Request) -> Outcome | None:
    d = statefile.load(_path(lock_dir, request.name, "done"), _outcome_shape, FIX, top=lock_dir)
    if d is None:
        return None
    return Outcome(d["code"], d["message"], tuple((s, q, t) for s, q, t in d["lines"]),
                   d["by"], d["together"])


def finish(lock_dir: str, request: Request, result: Outcome) -> None:
    """The holder: REQUEST's outcome, for its process to report (mode 0600, like the lock)."""
    if request.pid == os.getpid():
        return  # the holder's own request: it reports it itself
    statefile.write(_path(lock_dir, request.name, "done"),
                    {"code": result.code, "message": result.message,
                     "lines": [list(line) for line in result.lines], "by": result.by,
                     "together": result.together}, readable=False, top=lock_dir)


def _start(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), which a reused pid does not share;
    None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    if not 0 < pid < PID_MAX:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _requester(pid: int, start: int | None) -> bool:
    """Is PID still the process that recorded a request at START? (A request that says no
    start time was not recorded by a pcimgr that could know it: /proc says none either.)"""
    return _alive(pid) and _start(pid) in (start, None)


def tidy(lock_dir: str) -> None:
    """Under the lock (every changing run, `recover` too): remove the files of processes
    that are gone, a killed requester's temporary file among them."""
    pending(lock_dir, None)


def pending(lock_dir: str, params: dict[str, Any] | None) -> list[Request]:
    """The holder: recorded requests with these parameters (None: none) that no run has
    done yet, oldest pid first; removes the files of processes that are gone, and outcomes
    nobody asked."""
    found = []
    own = os.getpid()
    entries = set(statefile.names(lock_dir, DIR))
    for name in sorted(entries):
        path = os.path.join(_dir(lock_dir), name)
        stem, _, kind = name.rpartition(".")
        pid_text = stem.rpartition(".")[2] if kind in KINDS else \
            name.rpartition(".tmp.")[2]  # a writer's temporary file: NAME.KIND.tmp.PID
        if not pid_text.isdigit() or not os.path.isfile(path) or os.path.islink(path):
            continue  # not a file a pcimgr wrote: nothing to do with it
        pid = int(pid_text)
        if pid != own and not _alive(pid):
            _drop(lock_dir, path)
            continue
        if kind != "req":
            if kind in KINDS and f"{stem}.req" not in entries:
                _drop(lock_dir, path)  # an orphan: its requester forgot (or never asked)
            continue
        try:
            d = statefile.load(path, _request_shape, FIX, top=lock_dir)
        except Damaged:
            d = None  # its process never reads it back: it does its own under the lock
        if d is None or d["pid"] != pid or (pid != own and not _requester(pid, d["start"])):
            for k in KINDS:  # its pid is another process now (or it never was one)
                _drop(lock_dir, _path(lock_dir, stem, k))
            continue
        if d["params"] != params or f"{stem}.done" in entries:
            continue
        found.append(Request(stem, d["key"], pid, d["params"]))
    return sorted(found, key=lambda r: (r.pid != own, r.pid, r.key))


def _drop(lock_dir: str, path: str) -> None:
    try:
        statefile.remove(path, top=lock_dir)
    except Damaged:
        pass  # replaced meanwhile by something that is not a file: ignored as above


def take(lock_dir: str, taken: list[Request]) -> None:
    """The holder: say it is doing these (their processes wait on past the lock's timeout);
    a request whose mark cannot be written is still done (its process may just stop
    waiting sooner and do it itself)."""
    own = os.getpid()
    for r in taken:
        if r.pid != own:
            try:
                statefile.write(_path(lock_dir, r.name, "taken"), str(own), readable=False,
                                top=lock_dir)
            except Damaged:
                pass


def served(lock_dir: str, request: Request) -> Callable[[], str]:
    """What lock.exclusive asks at each poll: done, taken by a run, or still waiting."""
    done, taken = _path(lock_dir, request.name, "done"), _path(lock_dir, request.name, "taken")

    def now() -> str:
        if os.path.exists(done):
            return lock.DONE
        return lock.TAKEN if os.path.exists(taken) else lock.WAITING
    return now


def locked(machine: Machine, state: str, wait: float, request: Request,
           work: Callable[[str | None], None], vet: Vet, config: str) -> Outcome | None:
    """plans.runner.locked for a recorded request: None after running work(recovery message)
    under the lock (after the sweep and recovery that function does), or the outcome another
    run wrote for this request while this one waited."""
    lock_dir = machine.lock_dir
    with lock.exclusive(lock_dir, wait, served(lock_dir, request)) as held:
        result = outcome(lock_dir, request)  # also done just before the lock was let go
        if not held or result is not None:
            return result
        from pcimgr.plans import runner  # only the holder plans and recovers
        runner.recover_then(machine, state, work, vet, config)
    return None
