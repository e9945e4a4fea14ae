import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from pcimgr.cli.app import cli
from pcimgr.core.address import PciAddress
from pcimgr.core.viability import viability
from pcimgr.host import discovery, halves
from pcimgr.host.sysfs import Sysfs
from pcimgr.sim.machine import SimulatedMachine

A = PciAddress.parse


def test_demo_host_functions(demo_sysfs: Sysfs) -> None:
    host = discovery.scan(demo_sysfs)
    nic = host.get(A("04:00.0"))
    assert nic is not None
    assert (nic.vendor_id, nic.device_id, nic.class_code, nic.driver) == ("8086", "105e",
                                                                          0x020000, "e1000e")
    assert (nic.subsystem_vendor_id, nic.subsystem_device_id, nic.revision) == ("8086", "115e",
                                                                                "06")
    assert (nic.iommu_group, nic.numa_node, nic.netdevs) == (5, 0, ("enp4s0f0",))
    assert nic.driver_override is None and nic.sriov is None and nic.physfn is None
    assert host.iommu_enabled


def test_sriov_pf_and_vfs(demo_sysfs: Sysfs) -> None:
    host = discovery.scan(demo_sysfs)
    pf = host.get(A("07:00.0"))
    assert pf is not None and pf.sriov is not None
    assert (pf.sriov.totalvfs, pf.sriov.numvfs, pf.sriov.vf_device_id) == (8, 2, "1018")
    assert pf.sriov.vfs == (A("07:00.2"), A("07:00.3"))
    assert pf.sriov.drivers_autoprobe is True
    vf = host.get(A("07:00.3"))
    assert vf is not None and vf.physfn == A("07:00.0") and vf.netdevs == ("enp7s0f0np0v1",)


def test_vfs_listed_in_virtfn_index_order_past_ten(make_host) -> None:  # type: ignore[no-untyped-def]
    sysfs = SimulatedMachine(str(make_host("scale:1x12"))).sysfs
    pf = next(d for d in discovery.scan(sysfs).devices if d.sriov)
    assert [v.function + 8 * (v.slot - 0x10) for v in pf.sriov.vfs] == list(range(12))


def test_groups_and_viability(demo_sysfs: Sysfs) -> None:
    host = discovery.scan(demo_sysfs)
    pair = host.groups[5]
    assert [str(m.address) for m in pair.members] == ["0000:04:00.0", "0000:04:00.1"]
    v = viability(pair)
    assert not v.viable and len(v.blockers) == 2
    # the root port (pcieport) in group 4 does not count
    assert viability(host.groups[4]).viable


def test_viability_follows_drivers(demo_sysfs: Sysfs) -> None:
    for nic in ("0000:04:00.0", "0000:04:00.1"):
        demo_sysfs.write_attr(f"bus/pci/devices/{nic}/driver_override", "vfio-pci")
        demo_sysfs.write_attr("bus/pci/drivers/e1000e/unbind", nic)
        host = discovery.scan(demo_sysfs)
        demo_sysfs.write_attr("bus/pci/drivers_probe", nic)
        # an unbound endpoint does not block: after the first unbind one blocker is left
        assert [str(b.address) for b in viability(host.groups[5]).blockers] == (
            ["0000:04:00.1"] if nic.endswith("0") else [])
    assert viability(discovery.scan(demo_sysfs).groups[5]).viable


def test_no_iommu(make_host) -> None:  # type: ignore[no-untyped-def]
    host = discovery.scan(SimulatedMachine(str(make_host("demo", iommu=False))).sysfs)
    assert not host.iommu_enabled and host.groups == {}
    assert all(d.iommu_group is None for d in host.devices)


def test_function_vanishing_mid_scan_is_skipped(demo_sysfs: Sysfs, mocker) -> None:  # type: ignore[no-untyped-def]
    real = demo_sysfs.list_dir
    ghost = "0000:0a:00.0"

    def listing(rel: str) -> list[str]:
        names = real(rel)
        return names + [ghost] if rel == "bus/pci/devices" else names

    mocker.patch.object(demo_sysfs, "list_dir", side_effect=listing)
    host = discovery.scan(demo_sysfs)
    assert host.get(A(ghost)) is None
    assert len(host.devices) == len(real("bus/pci/devices"))


def test_function_losing_attributes_mid_read_is_skipped(demo_root: Path, demo_sysfs: Sysfs) -> None:
    for name in ("uevent", "vendor", "config"):
        (demo_root / "bus/pci/devices/0000:04:00.1" / name).unlink()
    host = discovery.scan(demo_sysfs)
    assert host.get(A("04:00.1")) is None and host.get(A("04:00.0")) is not None


@pytest.fixture
def opened(mocker) -> list[str]:  # type: ignore[no-untyped-def]
    """Every path the sysfs layer opens from now on (names relative to a directory fd)."""
    paths: list[str] = []
    real_open = os.open

    def spy(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        paths.append(str(path))
        return real_open(path, flags, *args, **kwargs)

    mocker.patch("pcimgr.host.sysfs.os.open", side_effect=spy)
    return paths


def test_each_attribute_read_once(demo_sysfs: Sysfs, opened: list[str]) -> None:
    discovery.scan(demo_sysfs)
    assert opened.count("uevent") == len(demo_sysfs.list_dir("bus/pci/devices"))


@pytest.mark.skipif(not os.path.isdir("/sys/bus/pci/devices"), reason="no PCI sysfs here")
def test_real_sys_read_only(run) -> None:  # type: ignore[no-untyped-def]
    r = run("list", "--all", "--json")
    assert r.exit_code == 0, r.output
    listed = [e["address"] for e in json.loads(r.output)]
    assert listed == sorted(os.listdir("/sys/bus/pci/devices"))


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except (OSError, ValueError):
            continue
        if entry.isdigit() and int(fields[1]) == pid:
            found.append(int(entry))
    return found


@pytest.fixture
def split_everything(mocker):  # type: ignore[no-untyped-def]
    """Every whole-bus scan split, as on a host with thousands of functions."""
    mocker.patch.object(discovery, "SPLIT_FROM", 2)
    mocker.patch.object(halves.os, "sched_getaffinity", return_value={0, 1})
    return mocker.spy(halves.os, "fork")


def test_split_scan_reads_what_a_serial_one_does(make_host, split_everything) -> None:  # type: ignore[no-untyped-def]
    sysfs = SimulatedMachine(str(make_host("server"))).sysfs
    split = discovery.scan(sysfs)
    assert split_everything.call_count == 1
    discovery.SPLIT_FROM = 10**9
    serial = discovery.scan(sysfs)
    assert split == serial and len(split.devices) == len(sysfs.list_dir("bus/pci/devices"))
    pf = next(d for d in split.devices if d.sriov and d.sriov.vfs)
    assert pf.sriov is not None and len(pf.sriov.vfs) == pf.sriov.numvfs


def test_one_cpu_is_not_split(demo_sysfs: Sysfs, split_everything, mocker) -> None:  # type: ignore[no-untyped-def]
    mocker.patch.object(halves.os, "sched_getaffinity", return_value={0})
    discovery.scan(demo_sysfs)
    assert split_everything.call_count == 0


@pytest.mark.parametrize("fault", ["child", "fork"])
def test_a_failed_child_leaves_its_half_to_the_parent(demo_sysfs: Sysfs, split_everything,
                                                      mocker, fault: str) -> None:  # type: ignore[no-untyped-def]
    serial = discovery.scan(demo_sysfs)
    if fault == "child":  # a full disk, say, while it sends its half: it exits 1
        mocker.patch.object(halves.pickle, "dump", side_effect=OSError(28, "No space"))
    else:
        mocker.patch.object(halves.os, "fork", side_effect=OSError(11, "EAGAIN"))
    assert discovery.scan(demo_sysfs) == serial


def test_a_child_killed_from_outside_costs_nothing_but_time(tmp_path: Path) -> None:
    """strace holds the child in an open of its half for 2 s while the test SIGKILLs it:
    the parent reads that half itself and prints what an untouched run prints."""
    import shutil
    import signal
    import subprocess
    import sys
    import time
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    from pcimgr.sim import builder, profiles
    root = tmp_path / "big"
    builder.build(str(root), profiles.scale(64, 15))  # 1,088 functions: split
    cmd = [sys.executable, "-m", "pcimgr", "--sysfs-root", str(root), "list", "--all", "--json"]
    expected = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    last = sorted(os.listdir(root / "bus/pci/devices"))[-1]  # in the child's half
    traced = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(root / "bus/pci/devices" / last),
         "-e", "inject=openat:delay_enter=2000000:when=1", *cmd],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 30
    while killed is None and time.monotonic() < deadline:
        for pcimgr in _children(traced.pid):
            for child in _children(pcimgr):
                os.kill(child, signal.SIGKILL)
                killed = child
        time.sleep(0.05)
    out, err = traced.communicate(timeout=60)
    assert killed is not None, "no split child seen"
    assert traced.returncode == 0, err
    assert out == expected


def test_related_scan_reads_each_function_once(demo_sysfs: Sysfs, opened: list[str]) -> None:
    """A pair in one group, named together: the group and the pair read once each."""
    whole = discovery.scan(demo_sysfs)
    pair = (A("04:00.0"), A("04:00.1"))
    opened.clear()
    related = discovery.scan_related(demo_sysfs, pair)
    group = whole.groups[whole.get(pair[0]).iommu_group]  # type: ignore[union-attr]
    assert {d.address for d in related.devices} >= {m.address for m in group.members}
    assert all(related.get(d.address) == d for d in group.members)
    assert opened.count("uevent") == len(related.devices)


def _strip(root: Path, names: tuple[str, ...], only: str | None = None) -> None:
    for fn in (root / "bus/pci/devices").iterdir():
        if only is None or fn.name == only:
            for name in names:
                (fn / name).unlink(missing_ok=True)


def test_a_tree_without_uevent_files_lists_the_same(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    """Captures of real machines' /sys often lack `uevent` (and `revision`): the ids, class,
    subsystem, driver and revision come from the files or the config header instead, and
    nothing is dropped in silence (issue 24: a tree with six GPUs listed none)."""
    before = run("--sysfs-root", demo_root, "list", "--all", "--json").output
    _strip(demo_root, ("uevent", "revision"))
    r = run("--sysfs-root", demo_root, "list", "--all", "--json")
    assert r.exit_code == 0 and r.output == before
    _strip(demo_root, ("vendor", "device", "class", "subsystem_vendor", "subsystem_device"))
    r = run("--sysfs-root", demo_root, "list", "--all", "--json")
    # the header alone says it all, but a bridge's subsystem ids (its SSVID capability)
    want = [d | ({"subsystem_vendor_id": None, "subsystem_device_id": None}
                 if d["is_bridge"] else {}) for d in json.loads(before)]
    assert r.exit_code == 0 and json.loads(r.output) == want
    _strip(demo_root, ("config",), only="0000:04:00.1")
    r = CliRunner().invoke(cli, ["--sysfs-root", str(demo_root), "list",
                                   "--all", "--json"])
    assert r.exit_code == 0
    assert "0000:04:00.1" not in {d["address"] for d in json.loads(r.stdout)}
    assert r.stderr.strip() == (
        f"pcimgr: note: 1 function(s) in {demo_root}/bus/pci/devices could not be read (no "
        "uevent, vendor/device/class files or config header) and are left out: 0000:04:00.1")


def test_show_says_unknown_not_none(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    for name in ("sriov_offset", "sriov_vf_device"):
        (demo_root / "bus/pci/devices/0000:05:00.0" / name).unlink()
    r = run("--sysfs-root", demo_root, "show", "05:00.0")
    assert "None" not in r.output and "VF id -, offset -, stride 2" in r.output
