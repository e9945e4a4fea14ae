"""vfs list/create/destroy/set on the simulated kernel: outcomes, refusals, faults, journal."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcimgr.host import uevents
from pcimgr.host.sysfs import Sysfs
from pcimgr.sim.kernel import SimulatedKernel
from pcimgr.sim.machine import SimulatedMachine
from tests.conftest import driver_of, golden, tree
from tests.killed import run_killed_after

IGB = "0000:05:00.0"
IGB_VFS = ("0000:05:10.0", "0000:05:10.2", "0000:05:10.4")
MLX = "0000:07:00.0"


def dev(root: Path, address: str) -> Path:
    return root / "bus/pci/devices" / address


def attr(root: Path, address: str, name: str) -> str:
    return (dev(root, address) / name).read_text().strip()


def vfs_json(run, root: Path, pf: str = IGB) -> dict:
    r = run("--sysfs-root", root, "vfs", "list", pf, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)[0]


def hold(root: Path, vf: str, who: str = "qemu-system-x86[4242]") -> None:
    group = int(os.path.basename(os.readlink(dev(root, vf) / "iommu_group")))
    SimulatedMachine(str(root)).kernel.hold_vfio(group, who)


# -- list ------------------------------------------------------------------------

def test_vfs_list_golden(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "vfs", "list")
    assert r.exit_code == 0
    golden("vfs_list_demo.txt", r.output)
    j = run("--sysfs-root", demo_root, "vfs", "list", "--json")
    golden("vfs_list_demo.json", j.output)
    mlx = [pf for pf in json.loads(j.output) if pf["address"] == MLX][0]
    assert [(v["mac"], v["vlan"]) for v in mlx["vfs"]] == [("52:54:00:6b:3c:01", 100),
                                                            ("52:54:00:6b:3c:02", 0)]


def test_vfs_list_of_a_function_without_sriov_is_bad_input(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "vfs", "list", "04:00.0")
    assert r.exit_code == 2 and "not SR-IOV capable" in r.output


# -- create ----------------------------------------------------------------------

def test_create_for_vfio_never_gives_the_host_a_driver(run, demo_root: Path, mocker) -> None:
    probed = []
    real_attach = SimulatedKernel._attach
    mocker.patch.object(SimulatedKernel, "_attach", lambda self, a, d: (
        probed.append((str(a), d)), real_attach(self, a, d))[1])
    r = run("--sysfs-root", demo_root, "vfs", "create", "05:00.0", "3")
    assert r.exit_code == 0, r.output
    assert probed == [(vf, "vfio-pci") for vf in IGB_VFS]  # igbvf never probed any of them
    assert [driver_of(demo_root, vf) for vf in IGB_VFS] == ["vfio-pci"] * 3
    groups = [os.readlink(dev(demo_root, vf) / "iommu_group") for vf in IGB_VFS]
    assert len(set(groups)) == 3
    assert all((demo_root / "dev/vfio" / os.path.basename(g)).exists() for g in groups)
    assert not any((dev(demo_root, vf) / "net").exists() for vf in IGB_VFS)
    assert attr(demo_root, IGB, "sriov_drivers_autoprobe") == "1"  # restored
    assert attr(demo_root, IGB, "sriov_numvfs") == "3"
    state = demo_root / ".pcimgr-state"
    assert not (state / "journal.json").exists()
    assert not (state / "devices").exists() or not os.listdir(state / "devices")
    assert "0000:05:10.4  vfio-pci" in r.output

    again = run("--sysfs-root", demo_root, "vfs", "create", "05:00.0", "3")
    assert again.exit_code == 0 and "already has 3 VF(s)" in again.output
    assert "Nothing to do." in again.output


def test_new_count_goes_through_zero_and_keeps_the_driver(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "vfs", "create", IGB, "3").exit_code == 0
    dry = run("--sysfs-root", demo_root, "vfs", "create", IGB, "2", "--dry-run")
    assert dry.exit_code == 0
    lines = [line.strip() for line in dry.output.splitlines()]
    zero = lines.index(f"echo 0 > /sys/bus/pci/devices/{IGB}/sriov_numvfs")
    two = [i for i, line in enumerate(lines)
           if line.startswith(f"echo 2 > /sys/bus/pci/devices/{IGB}/sriov_numvfs")]
    assert two and zero < two[0]
    r = run("--sysfs-root", demo_root, "vfs", "create", IGB, "2")
    assert r.exit_code == 0, r.output
    assert attr(demo_root, IGB, "sriov_numvfs") == "2"
    assert [driver_of(demo_root, vf) for vf in IGB_VFS[:2]] == ["vfio-pci"] * 2
    assert not dev(demo_root, IGB_VFS[2]).exists()


def test_count_above_the_maximum_is_refused_before_any_write(run, demo_root: Path) -> None:
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "vfs", "create", IGB, "8")
    assert r.exit_code == 2
    assert "at most 7 VFs under igb (sriov_totalvfs); ask for 7 or fewer" in r.output
    assert tree(demo_root) == before


@pytest.mark.parametrize("driver, words", [("vfio-pci", "cannot create VFs"),
                                           (None, "has no driver")])
def test_pf_without_its_own_driver_is_refused(run, demo_root: Path, driver, words) -> None:
    args = ("bind", IGB, "vfio-pci") if driver else ("unbind", IGB)
    assert run("--sysfs-root", demo_root, *args).exit_code == 0
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "vfs", "create", IGB, "2")
    assert r.exit_code == 4 and words in r.output and f"pcimgr rebind {IGB}" in r.output
    assert tree(demo_root) == before


def test_create_for_the_host_driver(run, demo_root: Path) -> None:
    # autoprobe off beforehand: switched on for the creation, then back off
    (dev(demo_root, IGB) / "sriov_drivers_autoprobe").write_text("0\n")
    r = run("--sysfs-root", demo_root, "vfs", "create", IGB, "2", "--driver", "host")
    assert r.exit_code == 0, r.output
    assert [driver_of(demo_root, vf) for vf in IGB_VFS[:2]] == ["igbvf", "igbvf"]
    assert sorted(os.listdir(dev(demo_root, IGB_VFS[0]) / "net")) == ["enp5s0f0v0"]
    assert attr(demo_root, IGB, "sriov_drivers_autoprobe") == "0"


def test_a_pf_that_is_down_gets_a_warning_or_is_brought_up(run, demo_root: Path) -> None:
    SimulatedMachine(str(demo_root)).kernel.set_link(IGB, "enp5s0f0", False)
    r = run("--sysfs-root", demo_root, "vfs", "create", IGB, "1")
    assert r.exit_code == 0 and "enp5s0f0 (the PF) is down" in r.output and "--pf-up" in r.output
    assert run("--sysfs-root", demo_root, "vfs", "destroy", IGB).exit_code == 0
    r = run("--sysfs-root", demo_root, "vfs", "create", IGB, "1", "--pf-up")
    assert r.exit_code == 0 and "is down" not in r.output
    assert vfs_json(run, demo_root)["link_up"] is True


def test_vfio_creation_refused_when_the_iommu_is_off(run, make_host) -> None:
    root = make_host("demo", iommu=False)
    r = run("--sysfs-root", root, "vfs", "create", IGB, "2")
    assert r.exit_code == 4 and "IOMMU is off" in r.output and "--driver host" in r.output
    assert attr(root, IGB, "sriov_numvfs") == "0"


def test_zero_count_points_to_destroy(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "vfs", "create", IGB, "0")
    assert r.exit_code == 2 and "vfs destroy" in r.output


# -- faults ----------------------------------------------------------------------

def _fail_at(mocker, k: int, code: int = errno.EIO) -> list[str]:
    """The k-th sysfs write (1-based) of the command fails with `code`."""
    writes: list[str] = []
    real = Sysfs.write_attr

    def write(self: Sysfs, rel: str, value: str) -> None:
        writes.append(rel)
        if len(writes) == k:
            from pcimgr.core.errors import KernelError
            raise KernelError(f"injected failure writing {rel}", code)
        real(self, rel, value)
    mocker.patch.object(Sysfs, "write_attr", write)
    return writes


def _prepared(run, root: Path) -> None:
    """3 VFs on vfio-pci, VF 1 with a MAC and VLAN: what a failed re-creation must give back."""
    assert run("--sysfs-root", root, "vfs", "create", IGB, "3").exit_code == 0
    assert run("--sysfs-root", root, "vfs", "set", IGB, "1", "--mac", "52:54:00:aa:bb:01",
               "--vlan", "10", "--qos", "3").exit_code == 0


def test_every_write_of_a_recreation_can_fail_and_is_rolled_back(run, demo_root: Path,
                                                                  mocker) -> None:
    _prepared(run, demo_root)
    before = tree(demo_root)
    counted = _fail_at(mocker, 10 ** 6)
    assert run("--sysfs-root", demo_root, "vfs", "create", IGB, "2").exit_code == 0
    total = len(counted)
    mocker.stopall()
    assert total >= 7  # 0, autoprobe, 2, override+probe for each VF, autoprobe
    for k in range(1, total + 1):
        # back to the prepared state: destroy, re-create and set again
        assert run("--sysfs-root", demo_root, "vfs", "destroy", IGB).exit_code == 0
        _prepared(run, demo_root)
        assert tree(demo_root) == before
        _fail_at(mocker, k)
        r = run("--sysfs-root", demo_root, "vfs", "create", IGB, "2")
        mocker.stopall()
        assert r.exit_code == 7, (k, r.output)
        assert "the host is as it was before" in r.output, (k, r.output)
        assert tree(demo_root) == before, f"write {k} of {total}"


def test_vfs_that_never_appear_time_out_and_roll_back(run, demo_root: Path, mocker) -> None:
    mocker.patch.object(SimulatedKernel, "_enable_vfs", lambda self, pf, count: None)
    r = run("--sysfs-root", demo_root, "vfs", "create", IGB, "2", "--timeout", "0.3")
    assert r.exit_code == 7
    assert "0 of 2 VFs are there 0.3 s after writing sriov_numvfs" in r.output
    assert attr(demo_root, IGB, "sriov_numvfs") == "0"
    assert attr(demo_root, IGB, "sriov_drivers_autoprobe") == "1"


def test_killed_create_is_undone_by_the_next_run(demo_root: Path) -> None:
    before = tree(demo_root)
    # killed right after the VFs appeared, before any was bound
    assert run_killed_after("sriov_numvfs", "--sysfs-root", str(demo_root), "vfs", "create",
                            "05:00.0", "3") == 9
    assert attr(demo_root, IGB, "sriov_numvfs") == "3"
    assert attr(demo_root, IGB, "sriov_drivers_autoprobe") == "0"
    journal = json.loads((demo_root / ".pcimgr-state/journal.json").read_text())
    assert [e["step"]["kind"] for e in journal["steps"]][:2] == ["autoprobe", "numvfs"]
    r = subprocess.run([sys.executable, "-m", "pcimgr", "--sysfs-root", str(demo_root), "vfs",
                        "destroy", IGB, "--dry-run"], capture_output=True, text=True)
    assert "an unfinished transaction would be rolled back first" in r.stdout
    r = subprocess.run([sys.executable, "-m", "pcimgr", "--sysfs-root", str(demo_root), "vfs",
                        "destroy", IGB], capture_output=True, text=True)
    assert "found an unfinished `vfs create 0000:05:00.0 3`" in r.stderr
    assert "has no VFs" in r.stdout
    assert tree(demo_root) == before


# -- destroy -----------------------------------------------------------------------

def test_destroy_refused_while_a_process_holds_a_vf(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "vfs", "create", IGB, "3").exit_code == 0
    hold(demo_root, IGB_VFS[1])
    before = tree(demo_root)
    for args in (("vfs", "destroy", IGB), ("vfs", "create", IGB, "2"),
                 ("vfs", "destroy", IGB, "--force")):
        r = run("--sysfs-root", demo_root, *args)
        assert r.exit_code == 4, r.output
        assert f"{IGB_VFS[1]} (IOMMU group 16, /dev/vfio/16 open by qemu-system-x86[4242])" \
            in r.output
        assert tree(demo_root) == before
    assert vfs_json(run, demo_root)["vfs"][1]["open_by"] == ["qemu-system-x86[4242]"]
    SimulatedMachine(str(demo_root)).kernel.release_vfio(16)
    r = run("--sysfs-root", demo_root, "vfs", "destroy", IGB)
    assert r.exit_code == 0 and "0/7 VFs" in r.output
    assert not any(dev(demo_root, vf).exists() for vf in IGB_VFS)
    assert not (demo_root / "dev/vfio/16").exists()


def test_destroy_refused_while_the_host_uses_a_vf_interface(run, demo_root: Path) -> None:
    from tests.test_hostdriver import set_host_facts
    assert run("--sysfs-root", demo_root, "vfs", "create", IGB, "2", "--driver",
               "host").exit_code == 0
    set_host_facts(demo_root, addresses={"enp5s0f0v1": ["198.51.100.7/24"]})
    r = run("--sysfs-root", demo_root, "vfs", "destroy", IGB)
    assert r.exit_code == 4 and "enp5s0f0v1 has address 198.51.100.7/24" in r.output
    assert attr(demo_root, IGB, "sriov_numvfs") == "2"
    assert run("--sysfs-root", demo_root, "vfs", "destroy", IGB, "--force").exit_code == 0
    assert attr(demo_root, IGB, "sriov_numvfs") == "0"


def test_undo_of_destroy_rebuilds_vfs_as_they_were(run, demo_root: Path) -> None:
    from pcimgr.core.address import PciAddress
    from pcimgr.host import discovery, usage
    from pcimgr.sriov import planner as sriov
    machine = SimulatedMachine(str(demo_root))
    assert run("--sysfs-root", demo_root, "detach", "07:00.3").exit_code == 0
    before = vfs_json(run, demo_root, MLX)
    pf = PciAddress.parse(MLX)
    proposal = sriov.plan_destroy(machine, discovery.scan_related(machine.sysfs, (pf,)),
                                  usage.survey(machine), pf, 5.0, False)
    (step,) = proposal.plan.steps
    step.apply(machine)
    assert vfs_json(run, demo_root, MLX)["numvfs"] == 0
    step.undo(machine)
    assert vfs_json(run, demo_root, MLX) == before  # drivers, overrides, MACs, VLANs


# -- set ---------------------------------------------------------------------------

def test_set_mac_vlan_trust_reads_back(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "vfs", "create", IGB, "2").exit_code == 0
    dry = run("--sysfs-root", demo_root, "vfs", "set", IGB, "1", "--mac", "52:54:00:AA:BB:01",
              "--vlan", "10", "--qos", "3", "--trust", "on", "--spoofchk", "off", "--dry-run")
    assert ("ip link set dev enp5s0f0 vf 1 mac 52:54:00:aa:bb:01 vlan 10 qos 3 spoofchk off "
            "trust on") in dry.output
    r = run("--sysfs-root", demo_root, "vfs", "set", IGB, "1", "--mac", "52:54:00:AA:BB:01",
            "--vlan", "10", "--qos", "3", "--trust", "on", "--spoofchk", "off")
    assert r.exit_code == 0, r.output
    vf = vfs_json(run, demo_root)["vfs"][1]
    assert (vf["mac"], vf["vlan"], vf["qos"], vf["trust"], vf["spoofchk"]) == (
        "52:54:00:aa:bb:01", 10, 3, True, False)
    assert vfs_json(run, demo_root)["vfs"][0]["mac"] == "00:00:00:00:00:00"
    same = run("--sysfs-root", demo_root, "vfs", "set", IGB, "1", "--vlan", "10", "--qos", "3")
    assert same.exit_code == 0 and "already has vlan 10, qos 3" in same.output


@pytest.mark.parametrize("args, words, code", [
    (("--mac", "01:00:5e:00:00:01"), "multicast or zero", 2),
    (("--mac", "52:54:00:aa:bb"), "not a MAC address", 2),
    (("--vlan", "4095"), "4095 is not in the range 0<=x<=4094", 2),
    (("--qos", "3"), "give --vlan with it", 2),
    ((), "nothing to set", 2),
    (("--state", "enable"), "the PF driver does not support it", 7),
])
def test_set_refusals(run, demo_root: Path, args, words, code) -> None:
    assert run("--sysfs-root", demo_root, "vfs", "create", IGB, "2").exit_code == 0
    r = run("--sysfs-root", demo_root, "vfs", "set", IGB, "0", *args)
    assert r.exit_code == code and words in r.output, r.output


def test_set_an_index_that_does_not_exist(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "vfs", "set", IGB, "0", "--vlan", "5")
    assert r.exit_code == 2 and "create them first" in r.output


def test_set_retries_while_the_vf_is_in_reset(run, demo_root: Path, mocker) -> None:
    assert run("--sysfs-root", demo_root, "vfs", "create", IGB, "2").exit_code == 0
    real = SimulatedKernel.set_vf
    answers = iter([OSError(errno.EAGAIN, "in reset"), OSError(errno.EAGAIN, "in reset")])

    def set_vf(self, pf, index, settings):
        failure = next(answers, None)
        if failure:
            raise failure
        real(self, pf, index, settings)
    mocker.patch.object(SimulatedKernel, "set_vf", set_vf)
    mocker.patch("pcimgr.host.vfinfo._RETRY_PAUSE", 0.01)
    r = run("--sysfs-root", demo_root, "vfs", "set", IGB, "0", "--mac", "52:54:00:aa:bb:02")
    assert r.exit_code == 0, r.output
    assert vfs_json(run, demo_root)["vfs"][0]["mac"] == "52:54:00:aa:bb:02"


def test_set_gives_up_on_a_vf_that_stays_in_reset(run, demo_root: Path, mocker) -> None:
    assert run("--sysfs-root", demo_root, "vfs", "create", IGB, "2").exit_code == 0
    mocker.patch.object(SimulatedKernel, "set_vf", side_effect=OSError(errno.EAGAIN, "reset"))
    mocker.patch("pcimgr.host.vfinfo._RETRY_PAUSE", 0.01)
    r = run("--sysfs-root", demo_root, "vfs", "set", IGB, "0", "--vlan", "7", "--timeout", "0.2")
    assert r.exit_code == 7 and "still in reset after 0.2 s" in r.output


# -- waiting -------------------------------------------------------------------------

def test_watcher_polls_where_there_are_no_uevents(demo_machine: SimulatedMachine) -> None:
    w = uevents.Watcher(demo_machine)
    assert not w.uses_uevents
    calls = iter([False, False, True])
    assert w.wait(lambda: next(calls), 1.0)
    assert not w.wait(lambda: False, 0.05)


def test_watcher_without_pyudev_falls_back_to_polling(mocker) -> None:
    mocker.patch.dict(sys.modules, {"pyudev": None})
    assert uevents._kernel_monitor() is None


def test_progress_is_shown_on_a_terminal_only(monkeypatch) -> None:
    import io

    from pcimgr.cli import runner
    from pcimgr.sriov.steps import SetNumVfs

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True
    assert runner.progress() is None  # pytest's streams are no terminal
    err = Tty()
    monkeypatch.setattr(sys, "stdout", Tty())
    monkeypatch.setattr(sys, "stderr", err)
    show = runner.progress()
    assert show is not None
    show(2, 9, SetNumVfs(IGB, 7, 0, (), "enp5s0f0", 30.0, False, IGB_VFS))
    assert err.getvalue() == (f"  [2/9] {IGB}: create 7 VF(s) (0000:05:10.0, 0000:05:10.2, "
                              "0000:05:10.4)\n")
