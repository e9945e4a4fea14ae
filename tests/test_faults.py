"""Faults while a change runs: ENOSPC/EIO on pcimgr's own state writes, SIGINT/SIGTERM and
SIGKILL at every write point. Injected from inside (pytest-mock) and from outside the
process (strace -e inject=...: the real syscalls fail, the real signals arrive).

Whatever happens, the outcome is one of two: exit 0 with the change complete and its
original-driver records written, or the host as it was (exit 7, saying so; or, after a
kill, once the next run recovered). Never a function on vfio-pci without its record,
never a temporary file left behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pcimgr.core.errors import Damaged, Interrupted
from pcimgr.drivers.binding import current_override
from pcimgr.host.sysfs import Sysfs
from pcimgr.plans import interrupts, statefile
from pcimgr.sim.machine import SimulatedMachine
from tests import strace_faults
from tests.conftest import driver_of
from tests.strace_faults import ENV, STRACE, TRACED, needs_strace, pcimgr

PAIR = ("0000:04:00.0", "0000:04:00.1")
DETACH = ("detach", "04:00.0", "--group")


def outcome(root: Path) -> str:
    """'detached' (both on vfio-pci, both records), 'as before' (both on e1000e, no override),
    or a description of the mixed state the test then reports."""
    state = root / ".pcimgr-state"
    drivers = [driver_of(root, a) for a in PAIR]
    overrides = [current_override(SimulatedMachine(str(root)).sysfs, a) for a in PAIR]
    records = [json.loads((state / "devices" / f"{a}.json").read_text())
               if (state / "devices" / f"{a}.json").exists() else None for a in PAIR]
    if drivers == ["vfio-pci"] * 2 and records == [{"driver": "e1000e", "override": None}] * 2:
        return "detached"
    if drivers == ["e1000e"] * 2 and overrides == [None, None]:
        return "as before"
    return f"MIXED: drivers {drivers}, overrides {overrides}, records {records}"


def leftovers(root: Path) -> list[str]:
    """Temporary files anywhere in the state directory, and the journal."""
    state = root / ".pcimgr-state"
    found = [str(p.relative_to(state)) for p in state.rglob("*.tmp.*")] if state.exists() else []
    return found + (["journal.json"] if (state / "journal.json").exists() else [])


# -- in-process: pytest-mock --------------------------------------------------------------

STATE_WRITES = 6  # journal: created, applying per step (a step's "applied" rides on the
                  # next write), the records' earlier content; two records


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("fail_at", range(STATE_WRITES))
def test_state_write_failure_rolls_back(run, demo_root: Path, mocker, fail_at: int,
                                        code: int) -> None:
    real = statefile.write
    calls = []

    def full(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        calls.append(args[0])
        if len(calls) == fail_at + 1:
            raise OSError(code, os.strerror(code), args[0])
        real(*args, **kwargs)

    mocker.patch("pcimgr.plans.statefile.write", side_effect=full)
    r = run("--sysfs-root", demo_root, *DETACH)
    assert r.exit_code == 7, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert os.strerror(code) in r.output and "rolled back: the host is as it was before" in r.output
    assert outcome(demo_root) == "as before"
    assert leftovers(demo_root) == []
    assert not (demo_root / ".pcimgr-state/devices").exists() or \
        not list((demo_root / ".pcimgr-state/devices").iterdir())


def test_all_seven_state_writes_are_counted(run, demo_root: Path, mocker) -> None:
    spy = mocker.spy(statefile, "write")
    assert run("--sysfs-root", demo_root, *DETACH).exit_code == 0
    # else the parametrisation above misses points; the last write is the history entry
    assert spy.call_count == STATE_WRITES + 1
    assert spy.call_args_list[-1].args[0].endswith("history.json")


def test_a_full_disk_at_the_history_entry_keeps_the_finished_change(run, demo_root: Path,
                                                                   mocker) -> None:
    """The history records a change; it is no precondition of one."""
    real = statefile.write

    def full_at_history(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if args[0].endswith("history.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), args[0])
        real(*args, **kwargs)
    mocker.patch("pcimgr.plans.statefile.write", side_effect=full_at_history)
    r = run("--sysfs-root", demo_root, *DETACH)
    assert r.exit_code == 0 and "not recorded" in r.output
    assert outcome(demo_root) == "detached" and leftovers(demo_root) == []
    assert outcome(demo_root) == "detached" and leftovers(demo_root) == []


def test_failed_write_leaves_no_temporary_file(tmp_path: Path, mocker) -> None:
    mocker.patch("pcimgr.plans.statefile.os.fsync", side_effect=OSError(errno.EIO, "I/O error"))
    with pytest.raises(Damaged, match="I/O error; free space there"):
        statefile.write(str(tmp_path / "state/journal.json"), {"a": 1}, top=str(tmp_path / "state"))
    assert os.listdir(tmp_path / "state") == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("after", range(1, 7))
def test_signal_during_change_rolls_back(run, demo_root: Path, mocker, after: int,
                                         signum: int) -> None:
    saved = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    interrupts.install()
    real = Sysfs.write_attr
    count = [0]

    def write(self: Sysfs, rel: str, value: str) -> None:
        real(self, rel, value)
        count[0] += 1
        if count[0] == after:
            os.kill(os.getpid(), signum)  # delivered now: raises in the handler

    mocker.patch.object(Sysfs, "write_attr", write)
    try:
        r = run("--sysfs-root", demo_root, *DETACH)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    assert r.exit_code == 7, r.output
    assert f"interrupted by {signal.Signals(signum).name}" in r.output
    assert "rolled back: the host is as it was before" in r.output
    assert outcome(demo_root) == "as before" and leftovers(demo_root) == []


def test_second_signal_during_rollback_waits(demo_root: Path) -> None:
    """A signal while shielded is held back and raised once the block is done."""
    saved = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    interrupts.install()
    reached = []
    try:
        with pytest.raises(Interrupted) as e, interrupts.shielded():
            os.kill(os.getpid(), signal.SIGTERM)
            reached.append("rest of the rollback")
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    assert reached == ["rest of the rollback"] and "SIGTERM" in str(e.value)


# -- from outside: strace injects the fault into the real syscall ------------------------

def write_points(root: Path, tmp_path: Path,
                 argv: tuple[str, ...] = DETACH) -> list[tuple[str, int, str]]:
    """(syscall, its ordinal among calls of that syscall, the line) of every write, fsync,
    rename and unlink a clean `detach --group` makes in its state directory. (Faults in
    sysfs writes are test_plan's; here they would hit the simulated kernel's own files.)"""
    log = tmp_path / "trace"
    r = pcimgr(root, *argv, trace=log)
    assert r.returncode == 0, r.stderr
    points, seen = [], dict.fromkeys(TRACED, 0)
    for line in log.read_text().splitlines():
        m = re.match(r"\d+\s+(\w+)\((\d+)", line)
        if m is None or m.group(1) not in seen:
            continue
        seen[m.group(1)] += 1
        if ".pcimgr-state" not in line:
            continue
        points.append((m.group(1), seen[m.group(1)], line))
    return points


@pytest.fixture
def points(make_host: Callable[..., Path], tmp_path: Path) -> list[tuple[str, int, str]]:
    found = write_points(make_host("demo", name="probe"), tmp_path)
    assert any(".pcimgr-state/devices/" in line for _, _, line in found)
    assert any(call == "unlinkat" for call, _, _ in found)
    return found


@needs_strace
def test_enospc_or_eio_at_every_write(make_host: Callable[..., Path],
                                      points: list[tuple[str, int, str]]) -> None:
    failures = []
    for n, (call, ordinal, line) in enumerate(points):
        code = "EIO" if call in ("fsync", "unlinkat") else "ENOSPC"
        root = make_host("demo", name=f"h{n}")
        r = pcimgr(root, *DETACH, inject=f"{call}:error={code}:when={ordinal}")
        state = outcome(root)
        ok = ((r.returncode == 0 and state == "detached") or
              (r.returncode == 7 and state == "as before" and "rolled back" in r.stderr
               and len(r.stderr.splitlines()) == 1))
        if not ok or leftovers(root):
            failures.append(f"{code} at {line[:90]}: exit {r.returncode}, {state}, "
                            f"left {leftovers(root)}, stderr {r.stderr.strip()!r}")
    assert failures == [], "\n".join(failures)


@needs_strace
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_at_every_write(make_host: Callable[..., Path],
                               points: list[tuple[str, int, str]], sig: str) -> None:
    failures = []
    for n, (call, ordinal, line) in enumerate(points):
        root = make_host("demo", name=f"{sig}{n}")
        r = pcimgr(root, *DETACH, inject=f"{call}:signal={sig}:when={ordinal}")
        state = outcome(root)
        ok = ((r.returncode == 0 and state == "detached") or
              (r.returncode == 7 and state == "as before"
               and f"interrupted by {sig}" in r.stderr and "rolled back" in r.stderr))
        if not ok or leftovers(root) or "Traceback" in r.stderr:
            failures.append(f"{sig} at {line[:90]}: exit {r.returncode}, {state}, "
                            f"left {leftovers(root)}, stderr {r.stderr.strip()!r}")
    assert failures == [], "\n".join(failures)


@needs_strace
def test_kill_at_every_write_then_recover(make_host: Callable[..., Path],
                                          points: list[tuple[str, int, str]]) -> None:
    """SIGKILL: no handler runs. The next run finishes the job: the host as it was, or
    the change complete with its records; never a function on vfio-pci without one."""
    failures = []
    for n, (call, ordinal, line) in enumerate(points):
        root = make_host("demo", name=f"k{n}")
        killed = pcimgr(root, *DETACH, inject=f"{call}:signal=SIGKILL:when={ordinal}")
        after = pcimgr(root, "recover")
        state = outcome(root)
        if killed.returncode != -signal.SIGKILL or after.returncode != 0 or \
                state not in ("detached", "as before") or leftovers(root):
            failures.append(f"kill at {line[:90]}: exit {killed.returncode}, then recover "
                            f"{after.returncode} {after.stdout.strip()!r}: {state}, "
                            f"left {leftovers(root)}")
    assert failures == [], "\n".join(failures)


REBIND = ("rebind", *PAIR)


def detached(make_host: Callable[..., Path], name: str) -> Path:
    root = make_host("demo", name=name)
    assert pcimgr(root, *DETACH).returncode == 0 and outcome(root) == "detached"
    return root


@needs_strace
def test_kill_during_rebind_never_loses_a_record(make_host: Callable[..., Path],
                                                 tmp_path: Path) -> None:
    """rebind removes the records once the pair is back: killed after that removal but
    before its journal went, recovery puts the pair back on vfio-pci *and* the records."""
    points = write_points(detached(make_host, "probe"), tmp_path, REBIND)
    assert any("unlinkat" in line and "devices" in line for _, _, line in points)
    failures = []
    for n, (call, ordinal, line) in enumerate(points):
        root = detached(make_host, f"r{n}")
        killed = pcimgr(root, *REBIND, inject=f"{call}:signal=SIGKILL:when={ordinal}")
        after = pcimgr(root, "recover")
        state = outcome(root)
        records = list((root / ".pcimgr-state/devices").glob("*.json"))
        rebound = (state == "as before" and records == [])
        if killed.returncode != -signal.SIGKILL or after.returncode != 0 or \
                not (rebound or state == "detached") or leftovers(root):
            failures.append(f"kill at {line[:90]}: {state}, records {records}, "
                            f"left {leftovers(root)}")
    assert failures == [], "\n".join(failures)


@needs_strace
def test_ctrl_c_at_any_point_of_a_read_command_is_one_line(demo_root: Path,
                                                           tmp_path: Path) -> None:
    """SIGINT from the first import of pcimgr to the end of `list`: one line, never a
    traceback, exit 130 (or 0 when it came too late to matter)."""
    log = tmp_path / "trace"
    env = ENV
    command = [sys.executable, "-m", "pcimgr", "--sysfs-root", str(demo_root), "list"]
    subprocess.run([STRACE, "-f", "-qq", "-e", "trace=openat", "-o", str(log), *command],
                   env=env, capture_output=True, check=True)
    calls = log.read_text().splitlines()
    # from the first file opened once pcimgr's own code runs (before it, Python itself
    # reads __main__.py and reports a Ctrl-C there as it likes)
    first = max(i for i, line in enumerate(calls)
                if re.search(r"pcimgr/(__pycache__/)?__main__", line)) + 2
    failures = []
    for n in range(first, len(calls) + 1, max(1, (len(calls) - first) // 12)):
        r = subprocess.run([STRACE, "-f", "-qq", "-o", os.devnull, "-e",
                            f"inject=openat:signal=SIGINT:when={n}", *command],
                           env=env, capture_output=True, text=True, timeout=60)
        if r.returncode not in (0, 130) or "Traceback" in r.stderr or (
                r.returncode == 130 and len(r.stderr.strip().splitlines()) != 1):
            failures.append(f"SIGINT at openat {n} ({calls[n - 1][:80]}): exit "
                            f"{r.returncode}, stderr {r.stderr[-300:]!r}")
    assert failures == [], "\n".join(failures)


def config_files(root: Path) -> dict[str, bytes]:
    cfg = root / ".pcimgr-config"
    return {str(p.relative_to(cfg)): p.read_bytes() for p in cfg.rglob("*") if p.is_file()}


@needs_strace
@pytest.mark.parametrize("fault", ["error=ENOSPC", "error=EIO", "signal=SIGTERM"])
def test_define_is_all_or_nothing(make_host: Callable[..., Path], tmp_path: Path,
                                  fault: str) -> None:
    """A definition is two files (the JSON and udev's env file): a fault at any write
    leaves both as they were (exit 7, saying so) or both new (exit 0)."""
    redefine = ("define", "05:00.0", "--vfs", "3")

    def prepared(name: str) -> Path:
        root = make_host("demo", name=name)
        assert pcimgr(root, "define", "05:00.0", "--vfs", "2").returncode == 0
        return root

    probe = prepared("probe")
    old = config_files(probe)
    log = tmp_path / "trace"
    assert pcimgr(probe, *redefine, trace=log).returncode == 0
    new = config_files(probe)
    assert new != old
    points, seen = [], dict.fromkeys(TRACED, 0)
    for line in log.read_text().splitlines():
        m = re.match(r"\d+\s+(\w+)\(", line)
        if m and m.group(1) in seen:
            seen[m.group(1)] += 1
            if ".pcimgr-config" in line:
                points.append((m.group(1), seen[m.group(1)], line))
    assert len(points) >= 6
    failures = []
    for n, (call, ordinal, line) in enumerate(points):
        root = prepared(f"d{n}")
        r = pcimgr(root, *redefine, inject=f"{call}:{fault}:when={ordinal}")
        now = config_files(root)
        ok = (r.returncode == 0 and now == new) or (
            r.returncode == 7 and now == old and "rolled back" in r.stderr
            and len(r.stderr.splitlines()) == 1)
        if not ok:
            failures.append(f"{fault} at {line[:90]}: exit {r.returncode}, "
                            f"{'new' if now == new else 'old' if now == old else now}, "
                            f"stderr {r.stderr.strip()!r}")
    assert failures == [], "\n".join(failures)


def _first(root: Path, tmp_path: Path, argv: tuple[str, ...], call: str, where: str,
           nth: int = 0) -> str:
    """strace's when=N for the first (or NTH) CALL of ARGV naming WHERE."""
    log = tmp_path / "probe-trace"
    assert pcimgr(root, *argv, trace=log, calls=(call,)).returncode == 0
    found = strace_faults.points(log, (call,), (where,))
    assert len(found) > nth, f"no {call} of {where}"
    return f"{call}:when={found[nth].ordinal}"


@needs_strace
@pytest.mark.parametrize("argv,call,where,nth", [
    (DETACH, "mkdirat", '".pcimgr-run"', 0),  # the lock's directory, at the first change
    (DETACH, "openat", '".pcimgr-run"', 0),   # not there yet
    (DETACH, "openat", '".pcimgr-run"', 1),   # just made
    (DETACH, "openat", '"lock"', 0),
])
def test_a_full_disk_at_pcimgr_own_directories_is_one_line(
        make_host: Callable[..., Path], tmp_path: Path, argv: tuple[str, ...], call: str,
        where: str, nth: int) -> None:
    at = _first(make_host("demo", name="probe"), tmp_path, argv, call, where, nth)
    root = make_host("demo")
    r = pcimgr(root, *argv, inject=at.replace(":", ":error=ENOSPC:", 1))
    assert r.returncode == 11, r.stderr
    assert "No space left on device; free space there" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and outcome(root) == "as before"


@needs_strace
def test_a_full_run_directory_at_the_request_queue_is_one_line(make_host: Callable[..., Path],
                                                               tmp_path: Path) -> None:
    """At boot, on a full /run: apply --device cannot record its request."""
    def defined(name: str) -> Path:
        root = make_host("demo", name=name)
        assert pcimgr(root, "define", "05:00.0", "--vfs", "2").returncode == 0
        shutil.rmtree(root / ".pcimgr-run")
        return root
    argv = ("apply", "--device", "05:00.0")
    at = _first(defined("probe"), tmp_path, argv, "mkdirat", "requests")
    r = pcimgr(defined("sys"), *argv, inject=at.replace(":", ":error=ENOSPC:", 1))
    assert r.returncode == 11 and "requests: No space left on device" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1


@needs_strace
@pytest.mark.parametrize("fault", ["signal=SIGINT", "signal=SIGTERM"])
def test_a_signal_at_the_open_of_a_temporary_file_leaves_none(make_host: Callable[..., Path],
                                                              tmp_path: Path,
                                                              fault: str) -> None:
    """Delivered as the openat that created NAME.tmp.PID returns: the file goes too."""
    argv = ("define", "05:00.0", "--vfs", "2")
    at = _first(make_host("demo", name="probe"), tmp_path, argv, "openat", ".tmp.")
    root = make_host("demo")
    r = pcimgr(root, *argv, inject=at.replace(":", f":{fault}:", 1))
    assert r.returncode == 7 and "rolled back" in r.stderr, r.stderr
    assert list((root / ".pcimgr-config").rglob("*.tmp.*")) == []
