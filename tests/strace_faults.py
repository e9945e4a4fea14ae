"""Faults injected from outside the process: strace -e inject=... makes the real syscall fail
or delivers the real signal at it. Shared by test_faults.py and test_fault_sweep.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None or os.environ.get("PCIMGR_NO_PTRACE") == "1",
                                  reason="strace is not installed (scripts/run installs it)")
TRACED = ("write", "fsync", "renameat", "unlinkat")
ENV = os.environ | {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}


def pcimgr(root: Path, *argv: str, inject: str | None = None, trace: Path | None = None,
           calls: tuple[str, ...] = TRACED) -> subprocess.CompletedProcess[str]:
    """pcimgr ARGV on the simulated host ROOT, under strace when a fault or a trace is asked."""
    command = [sys.executable, "-m", "pcimgr", "--sysfs-root", str(root), *argv]
    if inject or trace:
        assert STRACE is not None
        if inject:  # strace tampers only with the syscalls it traces
            calls = (*calls, inject.partition(":")[0])
        command = [STRACE, "-f", "-qq", "-y", "-e", f"trace={','.join(dict.fromkeys(calls))}",
                   "-o", str(trace or os.devnull)] + (["-e", f"inject={inject}"]
                                                     if inject else []) + command
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=120)


class Point(NamedTuple):
    call: str     # the syscall
    ordinal: int  # its ordinal among the calls of that syscall (strace's when=N)
    line: str     # as strace printed it


def points(log: Path, calls: tuple[str, ...], where: tuple[str, ...]) -> list[Point]:
    """The calls in strace's LOG that name a path containing one of WHERE, each with its
    ordinal among calls of the same syscall by the first process (the one strace started:
    a forked child's calls are counted by its own counter)."""
    found, seen = [], dict.fromkeys(calls, 0)
    first: str | None = None
    for line in log.read_text().splitlines():
        m = re.match(r"(\d+)\s+(\w+)\(", line)
        if m is None or m.group(2) not in seen:
            continue
        first = first or m.group(1)
        if m.group(1) != first:
            continue
        seen[m.group(2)] += 1
        if any(w in line for w in where):
            found.append(Point(m.group(2), seen[m.group(2)], line))
    return found
