"""detach, rebind, bind and unbind on the simulated kernel: outcomes, refusals, journal, lock."""

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcimgr.core.errors import KernelError, NeedsRoot
from pcimgr.host.linux import LinuxMachine
from pcimgr.host.sysfs import Sysfs
from pcimgr.plans import lock
from pcimgr.sim.machine import SimulatedMachine
from tests.conftest import driver_of, tree
from tests.test_address import BAD

PAIR = ("0000:04:00.0", "0000:04:00.1")


def override(root: Path, address: str) -> str:
    return (root / "bus/pci/devices" / address / "driver_override").read_text().strip()


def set_host_facts(root: Path, **facts: object) -> None:
    marker = root / ".pcimgr-simulated-host.json"
    data = json.loads(marker.read_text())
    data["host"].update(facts)
    marker.write_text(json.dumps(data))


def test_detach_refuses_a_shared_group_without_group(run, demo_root: Path) -> None:
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "detach", "04:00.0")
    assert r.exit_code == 4
    assert "shares IOMMU group 5 with 0000:04:00.1 (on e1000e)" in r.output
    assert "--group" in r.output and r.output.count("\n") == 1
    assert tree(demo_root) == before


def test_dry_run_prints_the_writes_and_changes_nothing(run, demo_root: Path) -> None:
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group", "--dry-run")
    assert r.exit_code == 0
    assert "echo 'vfio-pci' > /sys/bus/pci/devices/0000:04:00.1/driver_override" in r.output
    assert "echo 0000:04:00.0 > /sys/bus/pci/drivers/e1000e/unbind" in r.output
    assert tree(demo_root) == before
    assert not (demo_root / ".pcimgr-state").exists()


def test_detach_group_then_rebind_round_trip(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 0, r.output
    assert "IOMMU group 5 is viable for VFIO (/dev/vfio/5)" in r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["vfio-pci", "vfio-pci"]
    assert (demo_root / "dev/vfio/5").exists()
    state = demo_root / ".pcimgr-state"
    assert json.loads((state / "devices/0000:04:00.1.json").read_text()) == {
        "driver": "e1000e", "override": None}
    assert not (state / "journal.json").exists()

    again = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert again.exit_code == 0 and "Nothing to do." in again.output

    back = run("--sysfs-root", demo_root, "rebind", "04:00.0", "04:00.1")
    assert back.exit_code == 0, back.output
    assert "0000:04:00.1: vfio-pci -> e1000e" in back.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert [override(demo_root, a) for a in PAIR] == ["(null)", "(null)"]
    assert os.listdir(demo_root / "bus/pci/devices/0000:04:00.0/net") == ["enp4s0f0"]
    assert os.listdir(state / "devices") == []
    assert not (demo_root / "dev/vfio/5").exists()


def test_rebind_of_a_function_pcimgr_never_moved_reprobes(run, demo_root: Path) -> None:
    sysfs = SimulatedMachine(str(demo_root)).sysfs
    sysfs.write_attr("bus/pci/devices/0000:05:00.0/driver_override", "vfio-pci")
    sysfs.write_attr("bus/pci/drivers/igb/unbind", "0000:05:00.0")
    sysfs.write_attr("bus/pci/drivers_probe", "0000:05:00.0")
    r = run("--sysfs-root", demo_root, "rebind", "05:00.0")
    assert r.exit_code == 0, r.output
    assert driver_of(demo_root, "0000:05:00.0") == "igb"
    assert override(demo_root, "0000:05:00.0") == "(null)"
    untouched = run("--sysfs-root", demo_root, "rebind", "04:00.0")
    assert "nothing to give back" in untouched.output and "Nothing to do." in untouched.output


def test_unbind_then_rebind_and_bind(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "unbind", "04:00.1").exit_code == 0
    assert driver_of(demo_root, "0000:04:00.1") is None
    assert run("--sysfs-root", demo_root, "rebind", "04:00.1").exit_code == 0
    assert driver_of(demo_root, "0000:04:00.1") == "e1000e"
    r = run("--sysfs-root", demo_root, "bind", "04:00.1", "pci-stub")
    assert r.exit_code == 0 and driver_of(demo_root, "0000:04:00.1") == "pci-stub"
    assert run("--sysfs-root", demo_root, "rebind", "04:00.1").exit_code == 0
    assert driver_of(demo_root, "0000:04:00.1") == "e1000e"


@pytest.mark.parametrize("args,reason", [
    # the refusal nothing overrides comes first: the group holds the chipset's LPC bridge
    (["detach", "00:1f.6", "--group"], "the chipset's ISA/LPC bridge"),
    (["detach", "00:1f.6", "--group", "--force"], "not even with --group or --force"),
    (["detach", "02:00.0"],
     "nvme0n1p2 (via nvme0n1, nvme-subsys0, nvme0) is mounted on / (the root filesystem)"),
    (["detach", "02:00.0"], "nvme0n1p3 (via nvme0n1, nvme-subsys0, nvme0) is used as swap"),
    (["detach", "00:02.0"], "it is the boot display"),
    (["unbind", "00:00.0"], "chipset's host bridge"),
])
def test_safety_refusals_write_nothing(run, demo_root: Path, args: list[str], reason: str) -> None:
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, *args)
    assert r.exit_code == 4 and reason in r.output, r.output
    assert tree(demo_root) == before


@pytest.mark.parametrize("facts,reason", [
    ({"addresses": {"enp4s0f0": ["198.51.100.7/24"]}}, "enp4s0f0 has address 198.51.100.7/24"),
    ({"routes": {"enp4s0f1": ["default"]}}, "enp4s0f1 carries the default route"),
    ({"routes": {"enp4s0f1": ["10.9.0.0/16"]}}, "enp4s0f1 carries routes to 10.9.0.0/16"),
    ({"bond0": ("bond", ["enp4s0f0"])}, "enp4s0f0 is enslaved to bond0"),
])
def test_network_refusals_and_force(run, demo_root: Path, facts: dict, reason: str) -> None:
    if "bond0" in facts:
        from pcimgr.sim import tree as simtree
        simtree.stack_net(str(demo_root), "bond0", *facts["bond0"])
    else:
        set_host_facts(demo_root, **facts)
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 4 and reason in r.output and "--force" in r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group", "--force")
    assert r.exit_code == 0 and [driver_of(demo_root, a) for a in PAIR] == ["vfio-pci"] * 2


def test_held_block_device_refused(run, demo_root: Path) -> None:
    from pcimgr.sim import tree as simtree
    simtree.stack_block(str(demo_root), "dm-0", "vg0-data", ["nvme0n1"])
    set_host_facts(demo_root, mounts={}, swaps=[])
    r = run("--sysfs-root", demo_root, "detach", "02:00.0")
    assert r.exit_code == 4 and "nvme0n1 (via nvme-subsys0, nvme0) is held by dm-0" in r.output


def test_pf_with_vfs_on_vfio_refused(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "bind", "07:00.2", "vfio-pci").exit_code == 0
    r = run("--sysfs-root", demo_root, "detach", "07:00.0")
    assert r.exit_code == 4 and "its VFs 0000:07:00.2 are on vfio-pci" in r.output
    assert driver_of(demo_root, "0000:07:00.2") == "vfio-pci"


def test_iommu_off_refused_with_the_fix(run, make_host) -> None:
    root = make_host("demo", iommu=False)
    r = run("--sysfs-root", root, "detach", "04:00.0", "--group")
    assert r.exit_code == 4 and "intel_iommu=on" in r.output


@pytest.mark.parametrize("args,code", [
    *[(["detach", bad], 2) for bad in BAD if bad and not bad.startswith("-")][:8],
    (["detach", "04:00.0", "--driver", "../vfio"], 2),
    (["detach", "04:00.0", "--driver", "vfio pci"], 2),
    (["bind", "04:00.0", ""], 2),
    (["bind", "04:00.0", "/sys/bus/pci/drivers/x"], 2),
    (["detach", "0000:09:00.0"], 3),
    # a driver the host cannot have: one code and one message for every command
    (["bind", "04:00.0", "no_such_driver"], 2),
    (["detach", "04:00.0", "--group", "--driver", "igb_uio"], 2),
    (["define", "04:00.0", "--driver", "igb_uio"], 2),
])
def test_bad_input_writes_nothing(run, demo_root: Path, args: list[str], code: int) -> None:
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, *args)
    assert r.exit_code == code, r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    assert tree(demo_root) == before


def test_kernel_failure_rolls_back_with_exit_7(run, demo_root: Path, mocker) -> None:
    real = Sysfs.write_attr

    def failing(self, rel: str, value: str) -> None:  # type: ignore[no-untyped-def]
        if rel == "bus/pci/drivers/e1000e/unbind" and value == PAIR[1]:
            raise KernelError("injected EBUSY", 16)
        real(self, rel, value)

    mocker.patch.object(Sysfs, "write_attr", failing)
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 7
    assert "failed at step 2" in r.output and "the host is as it was before" in r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert not (demo_root / ".pcimgr-state/devices/0000:04:00.0.json").exists()


def test_needs_root_on_this_host_and_never_changes_another_tree(run, tmp_path: Path,
                                                                mocker) -> None:
    mocker.patch("os.geteuid", return_value=1000)
    with pytest.raises(NeedsRoot, match="needs root; run it with sudo"):
        LinuxMachine().require_root("changing the host (writes to /sys)")
    (tmp_path / "bus/pci/devices/0000:04:00.0").mkdir(parents=True)
    r = run("--sysfs-root", tmp_path, "--state-dir", tmp_path / "state", "detach", "04:00.0")
    assert r.exit_code == 4 and "not this host's /sys" in r.output, r.output
    assert not (tmp_path / "state").exists()


def _killed_detach(root: str, writes: int) -> None:
    real = Sysfs.write_attr
    count = [0]

    def write(self, rel: str, value: str) -> None:  # type: ignore[no-untyped-def]
        real(self, rel, value)
        count[0] += 1
        if count[0] == writes:
            os._exit(9)

    Sysfs.write_attr = write  # type: ignore[method-assign]
    from pcimgr.cli.app import main
    main(["--sysfs-root", root, "detach", "04:00.0", "--group"])


@pytest.mark.parametrize("writes", [1, 3, 4])
def test_next_run_finishes_a_killed_detach(run, demo_root: Path, writes: int) -> None:
    child = multiprocessing.get_context("fork").Process(target=_killed_detach,
                                                         args=(str(demo_root), writes))
    child.start()
    child.join()
    assert child.exitcode == 9
    assert (demo_root / ".pcimgr-state/journal.json").exists()
    r = run("--sysfs-root", demo_root, "rebind", "04:00.0")
    assert "found an unfinished `detach 0000:04:00.0`" in r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert [override(demo_root, a) for a in PAIR] == ["(null)", "(null)"]
    assert not (demo_root / ".pcimgr-state/journal.json").exists()


def _hold(state: str, ready, release) -> None:  # type: ignore[no-untyped-def]
    with lock.exclusive(state):
        ready.set()
        release.wait(10)


def test_busy_lock_exit_8(run, demo_root: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(demo_root / ".pcimgr-run"), ready, release))
    holder.start()
    assert ready.wait(10)
    try:
        r = run("--sysfs-root", demo_root, "--lock-timeout", "0.2", "detach", "04:00.0", "--group")
        assert r.exit_code == 8 and "another pcimgr" in r.output
        assert driver_of(demo_root, PAIR[0]) == "e1000e"
    finally:
        release.set()
        holder.join()


def test_concurrent_runs_serialise(demo_root: Path) -> None:
    cmd = [sys.executable, "-m", "pcimgr", "--sysfs-root", str(demo_root)]
    procs = [subprocess.Popen(cmd + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
             for args in (["detach", "04:00.0", "--group"], ["detach", "04:00.1", "--group"],
                          ["detach", "05:00.0"], ["bind", "06:00.0", "pci-stub"])]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    assert [driver_of(demo_root, a) for a in PAIR] == ["vfio-pci", "vfio-pci"]
    assert driver_of(demo_root, "0000:05:00.0") == "vfio-pci"
    assert driver_of(demo_root, "0000:06:00.0") == "pci-stub"
    assert sum("Nothing to do." in o for o in outputs[:2]) == 1
    assert not (demo_root / ".pcimgr-state/journal.json").exists()


@pytest.mark.parametrize("fail_on", ["driver_override", "unbind", "drivers_probe"])
def test_failed_rebind_of_an_untouched_function_rolls_back(run, demo_root: Path, mocker,
                                                           fail_on: str) -> None:
    sysfs = SimulatedMachine(str(demo_root)).sysfs
    for rel, value in (("bus/pci/devices/0000:05:00.0/driver_override", "vfio-pci"),
                       ("bus/pci/drivers/igb/unbind", "0000:05:00.0"),
                       ("bus/pci/drivers_probe", "0000:05:00.0")):
        sysfs.write_attr(rel, value)
    real = Sysfs.write_attr
    failed = []

    def failing(self, rel: str, value: str) -> None:  # type: ignore[no-untyped-def]
        if rel.endswith(fail_on) and not failed:
            failed.append(rel)
            raise KernelError("injected EPERM", 1)
        real(self, rel, value)

    mocker.patch.object(Sysfs, "write_attr", failing)
    r = run("--sysfs-root", demo_root, "rebind", "05:00.0")
    assert r.exit_code == 7 and "rolled back" in r.output
    assert driver_of(demo_root, "0000:05:00.0") == "vfio-pci"
    assert override(demo_root, "0000:05:00.0") == "vfio-pci"
