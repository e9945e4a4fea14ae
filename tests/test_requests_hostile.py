"""The boot request queue (LOCK_DIR/requests) trusted for nothing: whatever stands in it,
`apply --device` does its own request, and the holder removes what no live requester
will (docs/persistence.md, "Requests combine")."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.strace_faults import pcimgr

PF = "0000:05:00.0"


@pytest.fixture
def host(make_host: Callable[..., Path]) -> Path:
    root = make_host("demo")
    assert pcimgr(root, "define", PF, "--vfs", "2").returncode == 0
    (root / ".pcimgr-run/requests").mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def stranger() -> Iterator[int]:
    """A live process that is no pcimgr (as a pid reused after a reboot is)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p.pid
    p.kill()
    p.wait()


def applied(root: Path) -> subprocess.CompletedProcess[str]:
    r = pcimgr(root, "apply", "--device", PF)
    assert r.returncode == 0, r.stderr
    assert (root / "bus/pci/devices/0000:05:10.0").exists()  # its VFs are there
    return r


@pytest.mark.parametrize("name", [f"{PF}.{'9' * 20}.req", f"{PF}.{'9' * 20}.done",
                                  f"{PF}.0.req", f"{PF}.1.req.tmp.{'9' * 20}"])
def test_a_request_of_no_possible_process_is_removed(host: Path, name: str) -> None:
    path = host / ".pcimgr-run/requests" / name
    path.write_text(json.dumps({"key": PF, "pid": 0, "params": {}}))
    applied(host)
    assert not path.exists()


def test_a_directory_named_like_a_request_is_ignored(host: Path) -> None:
    planted = host / ".pcimgr-run/requests" / f"{PF}.4000000.req"
    planted.mkdir()
    r = applied(host)
    assert "internal error" not in r.stderr and planted.is_dir()


@pytest.mark.parametrize("start", [1, None])
def test_a_request_of_a_pid_another_process_now_has_is_removed(host: Path, stranger: int,
                                                                start: int | None) -> None:
    """Recorded before a reboot (the simulated host's run directory is no tmpfs), by a
    process whose pid is now another's, or written by hand: not served, not kept."""
    requests = host / ".pcimgr-run/requests"
    params = {"config": str(host / ".pcimgr-config"), "state": str(host / ".pcimgr-state"),
              "timeout": 30.0}
    (requests / f"{PF}.{stranger}.req").write_text(json.dumps(
        {"key": PF, "pid": stranger, "start": start, "params": params}))
    applied(host)
    assert sorted(p.name for p in requests.iterdir()) == []


def test_an_unreadable_request_of_a_live_process_is_removed(host: Path, stranger: int) -> None:
    planted = host / ".pcimgr-run/requests" / f"{PF}.{stranger}.req"
    planted.write_text("{not json")
    applied(host)
    assert not planted.exists()


def test_an_outcome_nobody_asked_for_is_removed(host: Path, stranger: int) -> None:
    orphans = [host / ".pcimgr-run/requests" / f"{PF}.{stranger}.{k}" for k in ("done", "taken")]
    for p in orphans:
        p.write_text("{}")
    applied(host)
    assert [p for p in orphans if p.exists()] == []
