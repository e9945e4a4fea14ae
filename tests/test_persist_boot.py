"""Boot: udev's parallel `apply --device` runs combine (cli/applying.py, plans/requests.py).

Real processes on a simulated host with four SR-IOV PFs: the test holds the host's lock
while they start, as a run already under way would, so every request is recorded before
one of them gets the lock; then exactly one run applies them all, and each process reports
its own PF's outcome and exit code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pcimgr.plans import lock, requests
from pcimgr.sim.machine import SimulatedMachine
from tests.conftest import driver_of

PFS = [f"0000:0{n}:00.0" for n in range(1, 5)]


def cfg(root: Path) -> Path:
    return root / ".pcimgr-config"


@pytest.fixture
def boot_root(make_host, run) -> Path:
    """scale:4x0: four igb PFs bound to igb and no VFs; each defined with 2 VFs on vfio-pci,
    VF 0 and VF 1 with a MAC and VLAN."""
    root = make_host("scale:4x0")
    for n, pf in enumerate(PFS):
        assert run("--sysfs-root", root, "define", pf, "--vfs", "2").exit_code == 0
        for vf in (0, 1):
            r = run("--sysfs-root", root, "define", pf, "--vf", str(vf), "--mac",
                    f"52:54:00:00:{n:02x}:{vf:02x}", "--vlan", str(100 + vf))
            assert r.exit_code == 0, r.output
    return root


def start(root: Path, pf: str) -> subprocess.Popen[str]:
    """The command line the rules run for a PF's bind (without systemd)."""
    return subprocess.Popen([sys.executable, "-m", "pcimgr", "--sysfs-root", str(root),
                             "--config-dir", str(cfg(root)), "apply", "--device", pf,
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@contextmanager
def held(root: Path) -> Iterator[None]:
    with lock.exclusive(SimulatedMachine(str(root)).lock_dir):
        yield


def recorded(root: Path, count: int) -> None:
    """Wait (bounded) until COUNT requests are recorded: the processes wait for the lock."""
    where = root / ".pcimgr-run" / requests.DIR
    deadline = time.monotonic() + 60
    while len(list(where.glob("*.req"))) < count:
        assert time.monotonic() < deadline, "the requests were not recorded"
        time.sleep(0.05)


def together(root: Path, pfs: list[str]) -> dict[str, tuple[int, str, str, int]]:
    """Start one run per PF while the lock is held; release it once all wait: each PF's
    (exit code, stdout, stderr, pid)."""
    with held(root):
        procs = {pf: start(root, pf) for pf in pfs}
        recorded(root, len(pfs))
    out = {}
    for pf, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        out[pf] = (p.returncode, stdout, stderr, p.pid)
    return out


def vfs_of(root: Path, pf: str) -> list[dict]:
    return json.loads(subprocess.run(
        [sys.executable, "-m", "pcimgr", "--sysfs-root", str(root), "vfs", "list", pf, "--json"],
        capture_output=True, text=True, check=True).stdout)[0]["vfs"]


def history(root: Path) -> list[dict]:
    return json.loads((root / ".pcimgr-state" / "history.json").read_text())


def holder_of(results: dict[str, tuple[int, str, str, int]]) -> tuple[str, int]:
    """The one run that did the work: the others name it."""
    holders = [(pf, pid) for pf, (_, _, err, pid) in results.items()
               if "this run also applied" in err]
    assert len(holders) == 1, results
    return holders[0]


def test_four_pfs_requested_together_are_applied_by_one_run(boot_root: Path, run) -> None:
    results = together(boot_root, PFS)
    assert all(code == 0 for code, *_ in results.values()), results
    holder, pid = holder_of(results)
    assert "this run also applied 3 request(s) of other runs" in results[holder][2]
    for pf, (_, stdout, stderr, _) in results.items():
        # every process prints its own PF's changes, whoever made them
        assert f"{pf}: create 2 VF(s)" in stdout
        assert f"{pf}: VF 0: mac 52:54:00:00:" in stdout
        assert all(line.startswith(pf[:8]) for line in stdout.splitlines())  # its bus
        if pf != holder:
            assert f"pcimgr: {pf} was applied by the run of pid {pid}, together with 3 other " \
                "request(s)" in stderr
    # every PF reached its definition
    assert run("--sysfs-root", boot_root, "status").exit_code == 0
    for n, pf in enumerate(PFS):
        vfs = vfs_of(boot_root, pf)
        assert [driver_of(boot_root, v["address"]) for v in vfs] == ["vfio-pci"] * 2
        assert [(v["mac"], v["vlan"]) for v in vfs] == [
            (f"52:54:00:00:{n:02x}:00", 100), (f"52:54:00:00:{n:02x}:01", 101)]
    # each PF in its own transactions, as its own run would have: one history entry each
    entries = history(boot_root)
    assert sorted(e["command"] for e in entries) == sorted(
        ["apply"] * 4 + [f"apply VF settings of {pf}" for pf in PFS])
    assert all(e["result"] == "done" for e in entries)
    assert not list((boot_root / ".pcimgr-run" / requests.DIR).iterdir())


def test_a_failing_pf_is_reported_by_its_own_request(boot_root: Path, run) -> None:
    """A definition that cannot be applied (the card at 03:00.0 is not the one defined)
    is that request's exit 10 and skip line; the other PFs are applied and exit 0."""
    path = cfg(boot_root) / "devices" / f"{PFS[2]}.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {"device_id": "1533"}))
    results = together(boot_root, PFS)
    code, stdout, stderr, _ = results[PFS[2]]
    assert code == 10, results
    assert f"skipped {PFS[2]}: different hardware: 8086:10c9 here, 8086:1533 defined; " \
        "not applied" in stderr
    assert "pcimgr: 1 definition(s) not applied (see above)" in stderr
    assert stdout == ""
    assert not (boot_root / "bus/pci/devices" / PFS[2] / "virtfn0").exists()
    for pf in (PFS[0], PFS[1], PFS[3]):
        assert results[pf][0] == 0, results[pf]
        assert [driver_of(boot_root, v["address"]) for v in vfs_of(boot_root, pf)] == \
            ["vfio-pci"] * 2
    holder_of(results)


def test_a_request_after_the_work_is_done_again(boot_root: Path) -> None:
    """A request recorded while a round runs is not served by that round (its event may
    be newer than the round's look at the host): the VFs removed meanwhile come back."""
    first = together(boot_root, PFS[:1])
    assert first[PFS[0]][0] == 0
    SimulatedMachine(str(boot_root)).sysfs.write_attr(
        f"bus/pci/devices/{PFS[0]}/sriov_numvfs", "0")
    again = together(boot_root, PFS[:1])
    assert again[PFS[0]][0] == 0
    assert f"{PFS[0]}: create 2 VF(s)" in again[PFS[0]][1]
    assert len(vfs_of(boot_root, PFS[0])) == 2


def test_an_undefined_device_fails_before_it_waits(boot_root: Path, run) -> None:
    r = run("--sysfs-root", boot_root, "apply", "--device", "0000:00:00.0")
    assert r.exit_code == 3
    assert "0000:00:00.0 has no definition" in r.output
    assert not (boot_root / ".pcimgr-run" / requests.DIR).exists() or \
        not list((boot_root / ".pcimgr-run" / requests.DIR).iterdir())


# -- in one process: the holder's side, with another (living) process's request ------------

@pytest.fixture
def other_pid() -> Iterator[int]:
    """A living process whose request the run serves (its files are written for it)."""
    p = subprocess.Popen(["sleep", "60"])
    yield p.pid
    p.kill()
    p.wait()


def ask(root: Path, key: str, pid: int) -> requests.Request:
    """What `apply --device KEY` of process PID records (params as applying._params)."""
    machine = SimulatedMachine(str(root))
    params = {"config": os.path.realpath(cfg(root)),
              "state": os.path.realpath(machine.default_state_dir), "timeout": 30.0}
    request = requests.Request(f"{key}.{pid}", key, pid, params)
    path = Path(machine.lock_dir) / requests.DIR / f"{request.name}.req"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "pid": pid, "start": requests._start(pid),
                                "params": params}))
    return request


def test_a_rollback_in_one_pf_leaves_the_others_applied(boot_root: Path, run, mocker,
                                                        other_pid: int) -> None:
    """The other request's PF fails mid-transaction: it is rolled back alone, its process
    gets exit 7 and the reason, and the run's own PF is applied (history says both)."""
    other = ask(boot_root, PFS[1], other_pid)
    from pcimgr.sriov import steps
    real = steps.SetNumVfs.apply

    def fail_on_pf2(self, machine):  # the second PF's VFs cannot be created
        if self.address == PFS[1]:
            raise OSError(5, "Input/output error")
        return real(self, machine)
    mocker.patch.object(steps.SetNumVfs, "apply", fail_on_pf2)
    r = run("--sysfs-root", boot_root, "apply", "--device", PFS[0], "--quiet")
    assert r.exit_code == 0, r.output
    assert f"this run also applied 1 request(s) of other runs (pid {other_pid})" in r.output
    lock_dir = SimulatedMachine(str(boot_root)).lock_dir
    result = requests.outcome(lock_dir, other)
    assert result is not None and result.code == 7 and result.by == os.getpid()
    assert re.search(r"apply failed at step \d+ \(0000:02:00.0\): Input/output error; "
                     r"rolled back: the host is as it was before", result.message)
    assert len(vfs_of(boot_root, PFS[0])) == 2
    assert vfs_of(boot_root, PFS[1]) == []
    assert [(e["command"], e["result"]) for e in history(boot_root)] == [
        ("apply", "done"), (f"apply VF settings of {PFS[0]}", "done"), ("apply", "rolled back")]


def test_requests_with_other_directories_are_left_to_their_process(
        boot_root: Path, run, other_pid: int, tmp_path: Path) -> None:
    other = ask(boot_root, PFS[1], other_pid)
    path = Path(SimulatedMachine(str(boot_root)).lock_dir) / requests.DIR / f"{other.name}.req"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {"params": data["params"] | {"config": str(tmp_path)}}))
    r = run("--sysfs-root", boot_root, "apply", "--device", PFS[0], "--quiet")
    assert r.exit_code == 0 and "also applied" not in r.output
    assert vfs_of(boot_root, PFS[1]) == []
    assert path.exists() and not path.with_suffix(".done").exists()


# -- the request files and the lock's wait ---------------------------------------------------

def test_requests_of_gone_processes_are_removed(tmp_path: Path) -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    params = {"config": "/c", "state": "/s", "timeout": 30.0}
    where = tmp_path / requests.DIR
    where.mkdir()
    (where / f"0000:01:00.0.{p.pid}.req").write_text(
        json.dumps({"key": "0000:01:00.0", "pid": p.pid, "params": params}))
    (where / f"0000:01:00.0.{p.pid}.req.tmp.{p.pid}").write_text("{")
    mine = requests.record(str(tmp_path), "0000:02:00.0", params)
    assert requests.pending(str(tmp_path), params) == [mine]
    assert sorted(os.listdir(where)) == [f"0000:02:00.0.{os.getpid()}.req"]
    assert requests.pending(str(tmp_path), params | {"timeout": 5.0}) == []


def test_outcome_round_trip_and_forget(tmp_path: Path, other_pid: int) -> None:
    params = {"config": "/c", "state": "/s", "timeout": 30.0}
    other = requests.Request(f"k.{other_pid}", "k", other_pid, params)
    result = requests.Outcome(10, "1 definition(s) not applied (see above)",
                              (("err", True, "skipped k: gone"), ("out", False, "x")), 1, 2)
    requests.finish(str(tmp_path), other, result)
    assert requests.outcome(str(tmp_path), other) == result
    assert requests.served(str(tmp_path), other)() == lock.DONE
    requests.forget(str(tmp_path), other)
    assert requests.outcome(str(tmp_path), other) is None
    assert requests.served(str(tmp_path), other)() == lock.WAITING
    with pytest.raises(ValueError):
        requests.record(str(tmp_path), "../x", params)


def test_the_lock_wait_ends_when_the_request_is_done(tmp_path: Path) -> None:
    """served() says DONE: the waiter stops without the lock; TAKEN: it waits past `wait`."""
    answers = iter([lock.TAKEN] * 3 + [lock.DONE])
    with lock.exclusive(str(tmp_path)):
        other = os.fork()
        if other == 0:  # a child holds no lock of ours: it must wait, then be served
            try:
                with lock.exclusive(str(tmp_path), 0.0, lambda: next(answers)) as got:
                    os._exit(0 if got is False else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(other, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with lock.exclusive(str(tmp_path), 0.0, lambda: lock.DONE) as got:
        assert got is True  # free: taken at once, whatever served() would say


def test_a_request_whose_key_is_no_address_fails_alone(boot_root: Path, run,
                                                       other_pid: int) -> None:
    """A request file is read by the run that serves it: a key that is not an address never
    names a file; that request gets exit 2, the run's own is applied."""
    other = ask(boot_root, "..", other_pid)
    r = run("--sysfs-root", boot_root, "apply", "--device", PFS[0], "--quiet")
    assert r.exit_code == 0, r.output
    result = requests.outcome(SimulatedMachine(str(boot_root)).lock_dir, other)
    assert result is not None and result.code == 2 and ".." in result.message
    assert len(vfs_of(boot_root, PFS[0])) == 2
