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
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

from pcimgr.core.errors import Damaged
from pcimgr.host.machine import Machine
from pcimgr.plans import lock, statefile

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


def record(lock_dir: str, key: str, params: dict[str, Any]) -> Request:
    """Record this process's request (before it waits for the lock)."""
    if "/" in key or key.startswith("."):
        raise ValueError(f"a request key is a file name: {key!r}")
    pid = os.getpid()
    request = Request(f"{key}.{pid}", key, pid, params)
    statefile.write(_path(lock_dir, request.name, "req"),
                    {"key": key, "pid": pid, "params": params}, readable=False, top=lock_dir)
    return request


def forget(lock_dir: str, request: Request) -> None:
    for kind in ("req", "taken", "done"):
        statefile.remove(_path(lock_dir, request.name, kind), top=lock_dir)


def _request_shape(data: Any) -> dict[str, Any]:
    return statefile.obj(data, key=str, pid=int, params=dict)


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pending(lock_dir: str, params: dict[str, Any]) -> list[Request]:
    """The holder: recorded requests with these parameters that no run has done yet, oldest
    pid first; removes the files of processes that are gone."""
    found = []
    own = os.getpid()
    for name in statefile.names(lock_dir, DIR):
        stem, _, kind = name.rpartition(".")
        pid_text = stem.rpartition(".")[2] if kind in ("req", "taken", "done") else \
            name.rpartition(".tmp.")[2]  # a writer's temporary file: NAME.KIND.tmp.PID
        pid = int(pid_text) if pid_text.isdigit() else None
        if pid is None:
            continue
        if pid != own and not _alive(pid):
            statefile.remove(os.path.join(_dir(lock_dir), name), top=lock_dir)
            continue
        if kind != "req":
            continue
        try:
            d = statefile.load(os.path.join(_dir(lock_dir), name), _request_shape, FIX,
                               top=lock_dir)
        except Damaged:
            continue  # its process reads its own request back, never: it waits on the lock
        if d is None or d["params"] != params or d["pid"] != pid:
            continue
        if os.path.exists(_path(lock_dir, stem, "done")):
            continue
        found.append(Request(stem, d["key"], pid, d["params"]))
    return sorted(found, key=lambda r: (r.pid != own, r.pid, r.key))


def take(lock_dir: str, taken: list[Request]) -> None:
    """The holder: say it is doing these (their processes wait on past the lock's timeout)."""
    own = os.getpid()
    for r in taken:
        if r.pid != own:
            statefile.write(_path(lock_dir, r.name, "taken"), str(own), readable=False,
                            top=lock_dir)


def served(lock_dir: str, request: Request) -> Callable[[], str]:
    """What lock.exclusive asks at each poll: done, taken by a run, or still waiting."""
    done, taken = _path(lock_dir, request.name, "done"), _path(lock_dir, request.name, "taken")

    def now() -> str:
        if os.path.exists(done):
            return lock.DONE
        return lock.TAKEN if os.path.exists(taken) else lock.WAITING
    return now


def locked(machine: Machine, state: str, wait: float, request: Request,
           work: Callable[[str | None], None]) -> Outcome | None:
    """plans.runner.locked for a recorded request: None after running work(recovery message)
    under the lock (after the sweep and recovery that function does), or the outcome another
    run wrote for this request while this one waited."""
    lock_dir = machine.lock_dir
    with lock.exclusive(lock_dir, wait, served(lock_dir, request)) as held:
        result = outcome(lock_dir, request)  # also done just before the lock was let go
        if not held or result is not None:
            return result
        from pcimgr.plans import runner  # only the holder plans and recovers
        runner.recover_then(machine, state, work)
    return None
