"""Plans on the simulated kernel: apply, roll back on a failure at any step, recover after
a kill."""

import errno
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from pcimgr.core.errors import Busy, KernelError, RolledBack
from pcimgr.drivers import recovery
from pcimgr.drivers.binding import BindDriver, current_driver, current_override
from pcimgr.host.sysfs import Sysfs
from pcimgr.plans import lock, transaction
from pcimgr.sim.machine import SimulatedMachine
from tests.conftest import driver_of

PAIR = ("0000:04:00.0", "0000:04:00.1")


def detach_pair(sysfs: Sysfs) -> transaction.Plan:
    return transaction.Plan("detach --group 04:00.0", tuple(
        BindDriver(a, "vfio-pci", "vfio-pci", current_driver(sysfs, a), current_override(sysfs, a))
        for a in PAIR))


def test_plan_moves_both_and_leaves_no_journal(demo_root: Path, demo_machine: SimulatedMachine,
                                               demo_sysfs: Sysfs,
                                                tmp_path: Path) -> None:
    p = detach_pair(demo_sysfs)
    assert "echo 0000:04:00.0 > /sys/bus/pci/drivers/e1000e/unbind" in p.describe()
    transaction.execute(p, demo_machine, str(tmp_path / "state"))
    assert [driver_of(demo_root, a) for a in PAIR] == ["vfio-pci", "vfio-pci"]
    assert (demo_root / "dev/vfio/5").exists()
    assert not (tmp_path / "state/journal.json").exists()
    for step in reversed(p.steps):
        step.undo(demo_machine)
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert [current_override(demo_sysfs, a) for a in PAIR] == [None, None]


def test_describe_changes_nothing(demo_root: Path, demo_sysfs: Sysfs) -> None:
    before = sorted(str(p) + str(p.is_symlink()) for p in demo_root.rglob("*"))
    detach_pair(demo_sysfs).describe()
    assert sorted(str(p) + str(p.is_symlink()) for p in demo_root.rglob("*")) == before


WRITES_PER_DETACH = 6  # per function: override, unbind, drivers_probe


@pytest.mark.parametrize("code", [errno.EBUSY, errno.ENODEV, errno.EINVAL, errno.EPERM])
@pytest.mark.parametrize("fail_at", range(WRITES_PER_DETACH))
def test_failure_at_any_write_rolls_back(demo_root: Path, demo_machine: SimulatedMachine,
                                         demo_sysfs: Sysfs, tmp_path: Path,
                                         mocker, fail_at: int, code: int) -> None:
    real = demo_sysfs.write_attr
    calls = []

    def flaky(rel: str, value: str) -> None:
        calls.append(rel)
        if len(calls) == fail_at + 1:
            raise KernelError(f"injected {errno.errorcode[code]}", code)
        real(rel, value)

    mocker.patch.object(demo_sysfs, "write_attr", side_effect=flaky)
    with pytest.raises(RolledBack) as e:
        transaction.execute(detach_pair(demo_sysfs), demo_machine, str(tmp_path / "state"))
    assert "rolled back: the host is as it was before" in str(e.value)
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert [current_override(demo_sysfs, a) for a in PAIR] == [None, None]
    assert not (tmp_path / "state/journal.json").exists()


def test_bind_timeout_rolls_back(demo_root: Path, demo_machine: SimulatedMachine,
                                 demo_sysfs: Sysfs, tmp_path: Path,
                                 mocker) -> None:
    mocker.patch("pcimgr.drivers.binding.BIND_TIMEOUT", 0.05)
    real = demo_sysfs.write_attr

    def probe_does_nothing(rel: str, value: str) -> None:
        if rel == "bus/pci/drivers_probe" and value == PAIR[1] and \
                current_override(demo_sysfs, PAIR[1]) == "vfio-pci":
            return  # the driver never shows up
        real(rel, value)

    mocker.patch.object(demo_sysfs, "write_attr", side_effect=probe_does_nothing)
    with pytest.raises(RolledBack, match="did not bind to vfio-pci"):
        transaction.execute(detach_pair(demo_sysfs), demo_machine, str(tmp_path / "state"))
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


def _killed_after(root: str, state: str, writes: int) -> None:
    machine = SimulatedMachine(root)
    sysfs = machine.sysfs
    real = sysfs.write_attr
    count = [0]

    def write(rel: str, value: str) -> None:
        real(rel, value)
        count[0] += 1
        if count[0] == writes:
            os._exit(9)  # as SIGKILL: no cleanup, no exception handlers

    sysfs.write_attr = write  # type: ignore[method-assign]
    transaction.execute(detach_pair(sysfs), machine, state)


@pytest.mark.parametrize("writes", range(1, WRITES_PER_DETACH))
def test_recover_after_kill(demo_root: Path, tmp_path: Path, writes: int) -> None:
    state = str(tmp_path / "state")
    child = multiprocessing.get_context("fork").Process(
        target=_killed_after, args=(str(demo_root), state, writes))
    child.start()
    child.join()
    assert child.exitcode == 9
    journal = json.loads((tmp_path / "state/journal.json").read_text())
    assert journal["command"] == "detach --group 04:00.0"
    machine = SimulatedMachine(str(demo_root))
    message = transaction.recover(machine, state, recovery.vet(machine))
    assert message is not None and "undid" in message
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert [current_override(SimulatedMachine(str(demo_root)).sysfs, a) for a in PAIR] == [None,
                                                                                           None]
    assert transaction.recover(machine, state, recovery.vet(machine)) is None


def test_a_journal_of_the_flat_layout_is_recovered(demo_root: Path, tmp_path: Path) -> None:
    """Journals written before steps named their module (the layout before pcimgr's
    packages) are read back by kind alone."""
    state = str(tmp_path / "state")
    child = multiprocessing.get_context("fork").Process(
        target=_killed_after, args=(str(demo_root), state, 3))
    child.start()
    child.join()
    path = tmp_path / "state/journal.json"
    journal = json.loads(path.read_text())
    assert all(e["step"].pop("module") == "pcimgr.drivers.binding" for e in journal["steps"])
    path.write_text(json.dumps(journal))
    machine = SimulatedMachine(str(demo_root))
    message = transaction.recover(machine, state, recovery.vet(machine))
    assert message is not None and "undid" in message
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


def _hold_lock(state: str, ready, release) -> None:  # type: ignore[no-untyped-def]
    with lock.exclusive(state):
        ready.set()
        release.wait(10)


def test_second_process_waits_then_fails(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(10)
    started = time.monotonic()
    with pytest.raises(Busy, match="another pcimgr"), lock.exclusive(str(tmp_path), wait=0.3):
        pass
    assert time.monotonic() - started >= 0.3
    release.set()
    holder.join()
    with lock.exclusive(str(tmp_path), wait=0.3):  # free again once the holder exits
        pass
