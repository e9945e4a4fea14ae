"""The strace sweep: every change command, faulted at each syscall that touches pcimgr's
state, configuration or run directory (ENOSPC, EIO, SIGINT, SIGKILL), ends in a documented
exit code with one line and no traceback, no temporary file left, the definitions and
records wholly old or wholly new, and no function that had a driver left without one.

The default suite runs a deterministic sample (at most MAX_CASES runs); PCIMGR_FULL_SWEEP=1
runs every point with every fault.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from pcimgr.host.sysfs import DEVICES
from pcimgr.sim.machine import SimulatedMachine
from tests.strace_faults import Point, needs_strace, pcimgr, points

CALLS = ("openat", "mkdir", "mkdirat", "write", "fsync", "rename", "renameat", "renameat2",
         "unlink", "unlinkat", "rmdir")
DIRS = (".pcimgr-state", ".pcimgr-config", ".pcimgr-run")
FAULTS = ("error=ENOSPC", "error=EIO", "signal=SIGINT", "signal=SIGKILL")
# documented exit codes (docs/user-guide.md): errors 2-11, a signal 128+N
DOCUMENTED = set(range(2, 12)) | {128 + signal.SIGINT}
FULL = os.environ.get("PCIMGR_FULL_SWEEP") == "1"
MAX_CASES = 80

# (name, what runs before, the command faulted)
SCENARIOS = [
    ("detach", [], ["detach", "04:00.0", "--group"]),
    ("rebind", [["detach", "04:00.0", "--group"]], ["rebind", "04:00.0", "04:00.1"]),
    ("vfs", [], ["vfs", "create", "05:00.0", "2"]),
    ("define", [], ["define", "05:00.0", "--vfs", "2"]),
    ("apply", [["define", "05:00.0", "--vfs", "2"]], ["apply"]),
    ("apply-device", [["define", "05:00.0", "--vfs", "2"]], ["apply", "--device", "05:00.0"]),
    ("undefine", [["define", "05:00.0", "--vfs", "2"]], ["undefine", "05:00.0"]),
    ("define-group", [], ["define", "04:00.0", "--driver", "vfio-pci", "--group"]),
]


def files(root: Path, top: str) -> dict[str, bytes]:
    """pcimgr's kept files below TOP (not its log of changes, which a fault may leave short
    of an entry)."""
    base = root / top
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and p.name != "history.json"} if base.exists() else {}


def temporaries(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for d in DIRS if (root / d).exists()
            for p in (root / d).rglob("*")
            if ".tmp." in p.name or p.name in ("journal.json", "pending-change.json")]


def drivers(root: Path) -> dict[str, str | None]:
    sysfs = SimulatedMachine(str(root)).sysfs
    out = {}
    for name in os.listdir(sysfs.path(DEVICES)):
        link = Path(sysfs.path(DEVICES)) / name / "driver"
        out[name] = os.path.basename(os.readlink(link)) if link.is_symlink() else None
    return out


def snapshot(root: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    return files(root, ".pcimgr-config"), files(root, ".pcimgr-state")


def sample(cases: list[tuple[Point, str]], n: int) -> list[tuple[Point, str]]:
    """N cases spread evenly over the list, always its first and last (deterministic)."""
    if FULL or len(cases) <= n:
        return cases
    step = (len(cases) - 1) / (n - 1)
    return [cases[round(i * step)] for i in range(n)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, list[list[str]]], Path]:
    """A fresh demo host with the scenario's earlier commands run, built once and copied."""
    made: dict[str, Path] = {}

    def get(name: str, before: list[list[str]]) -> Path:
        if name not in made:
            from pcimgr.sim import builder, profiles
            root = tmp_path_factory.mktemp(f"base-{name}") / "sys"
            builder.build(str(root), profiles.get("demo"))
            for argv in before:
                assert pcimgr(root, *argv).returncode == 0
            made[name] = root
        return made[name]
    return get


def fresh(base: Path, where: Path) -> Path:
    shutil.copytree(base, where, symlinks=True)
    return where


@needs_strace
@pytest.mark.parametrize("name,before,argv", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_every_fault_at_every_point(prepared: Callable[[str, list[list[str]]], Path],
                                    tmp_path: Path, name: str, before: list[list[str]],
                                    argv: list[str]) -> None:
    base = prepared(name, before)
    probe = fresh(base, tmp_path / "probe")
    old, old_drivers = snapshot(probe), drivers(probe)
    log = tmp_path / "trace"
    clean = pcimgr(probe, *argv, trace=log, calls=CALLS)
    assert clean.returncode == 0, clean.stderr
    new = snapshot(probe)
    found = points(log, CALLS, DIRS)
    assert found, "the command touched none of pcimgr's directories"
    cases = sample([(p, f) for p in found for f in FAULTS], MAX_CASES // len(SCENARIOS))
    failures = []
    for n, (point, fault) in enumerate(cases):
        root = fresh(base, tmp_path / f"c{n}")
        r = pcimgr(root, *argv, inject=f"{point.call}:{fault}:when={point.ordinal}")
        said = r.stdout + r.stderr
        problems = []
        if "internal error" in said or "Traceback" in said:
            problems.append("internal error")
        if fault == "signal=SIGKILL":
            after = pcimgr(root, "recover")
            if after.returncode != 0:
                problems.append(f"recover exit {after.returncode}: {after.stderr.strip()!r}")
        elif r.returncode and (r.returncode not in DOCUMENTED or (
                len(r.stderr.strip().splitlines()) != 1 and r.returncode not in (10, 11))):
            problems.append(f"exit {r.returncode}")  # 10, 11: the findings, then a summary
        if temporaries(root):
            problems.append(f"left {temporaries(root)}")
        now = snapshot(root)
        for part, label in ((0, "definitions"), (1, "records")):
            if now[part] not in (old[part], new[part]):
                problems.append(f"{label} half-changed: {json.dumps(sorted(now[part]))}")
        lost = [a for a, d in drivers(root).items() if d is None and old_drivers.get(a)]
        if lost:
            problems.append(f"no driver: {lost}")
        if problems:
            failures.append(f"{fault} at {point.call} #{point.ordinal} ({point.line[:100]}): "
                            f"exit {r.returncode}, {'; '.join(problems)}; "
                            f"stderr {r.stderr.strip()[-200:]!r}")
        shutil.rmtree(root)
    assert failures == [], f"{len(failures)} of {len(cases)}:\n" + "\n".join(failures)
