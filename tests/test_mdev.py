"""Mediated devices on the simulated kernel (profile 'mdev'): types, create, remove, start,
definitions in mdevctl's format; refusals, faults, kills and the journal."""

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from pcimgr.sim.machine import SimulatedMachine
from tests.killed import run_killed_after
from tests.strace_faults import needs_strace, pcimgr

U1 = "6f5a0e02-96d1-4d0c-9c63-3a4b8a1f0c01"
U2 = "6f5a0e02-96d1-4d0c-9c63-3a4b8a1f0c02"
GVT = "0000:00:02.0"
T4 = "0000:3b:00.0"


@pytest.fixture
def root(make_host: Callable[..., Path]) -> Path:
    return make_host("mdev")


def types(run, root: Path, parent: str) -> dict[str, dict]:
    r = run("--sysfs-root", root, "mdev", "types", parent, "--json")
    assert r.exit_code == 0, r.output
    (found,) = json.loads(r.output)
    return {t["type"]: t for t in found["types"]}


def available(run, root: Path, parent: str) -> dict[str, int]:
    return {k: t["available_instances"] for k, t in types(run, root, parent).items()}


def mdev_dir(root: Path, uuid: str) -> Path:
    return root / "bus/mdev/devices" / uuid


def group(root: Path, uuid: str) -> int:
    return int(os.path.basename(os.readlink(mdev_dir(root, uuid) / "iommu_group")))


def plant_journal(root: Path, step: dict) -> None:
    """A journal as a killed run would leave it: root's, mode 0600, one step applied."""
    state = root / ".pcimgr-state"
    state.mkdir(mode=0o700, exist_ok=True)
    journal = state / "journal.json"
    journal.write_text(json.dumps({"command": "mdev", "pid": 1, "started": 0,
                                   "steps": [{"step": step, "state": "applied"}]}))
    journal.chmod(0o600)


def create(run, root: Path, parent: str = "mtty", kind: str = "mtty-2", uuid: str = U1,
           *extra: str):
    return run("--sysfs-root", root, "mdev", "create", parent, kind, "--uuid", uuid, *extra)


# -- types --------------------------------------------------------------------------

def test_types_lists_every_parent_with_what_the_kernel_counts(run, root: Path) -> None:
    r = run("--sysfs-root", root, "mdev", "types")
    assert r.exit_code == 0, r.output
    assert "0000:00:02.0  (CoffeeLake-S GT2 [UHD Graphics 630], i915)" in r.output
    assert "mtty  (virtual device)" in r.output
    j = run("--sysfs-root", root, "mdev", "types", "--json")
    parents = {p["parent"]: p for p in json.loads(j.output)}
    assert set(parents) == {GVT, T4, "mtty"}
    assert parents[GVT]["pci"] == GVT and parents["mtty"]["pci"] is None
    gvt = {t["type"]: t for t in parents[GVT]["types"]}
    assert gvt["i915-GVTg_V5_4"] == {
        "type": "i915-GVTg_V5_4", "name": "GVTg_V5_4", "device_api": "vfio-pci",
        "description": "low_gm_size: 128MB\nhigh_gm_size: 512MB\nfence: 4\n"
                       "resolution: 1920x1200\nweight: 4",
        "available_instances": 1, "mdevs": []}
    assert available(run, root, "mtty") == {"mtty-1": 24, "mtty-2": 12}


def test_types_of_an_unknown_parent_names_the_known_ones(run, root: Path) -> None:
    r = run("--sysfs-root", root, "mdev", "types", "0000:09:00.0")
    assert r.exit_code == 3
    assert "no mdev parent '0000:09:00.0'" in r.output and "mtty" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_host_without_parents_says_so_on_stderr(run, make_host) -> None:
    r = run("--sysfs-root", make_host("demo"), "mdev", "types", "--json")
    assert r.exit_code == 0 and json.loads(r.output) == []


# -- create -------------------------------------------------------------------------

def test_create_makes_the_device_its_group_and_shrinks_the_siblings(run, root: Path) -> None:
    r = create(run, root)
    assert r.exit_code == 0, r.output
    d = mdev_dir(root, U1)
    assert os.path.realpath(d) == str(root / "devices/virtual/mtty/mtty" / U1)
    assert os.path.basename(os.readlink(d / "mdev_type")) == "mtty-2"
    assert os.path.basename(os.readlink(d / "driver")) == "mtty"
    assert (root / "dev/vfio" / str(group(root, U1))).exists()
    # mtty's 24 ports: a dual-port mdev takes two from both types' counts
    assert available(run, root, "mtty") == {"mtty-1": 22, "mtty-2": 11}
    listed = json.loads(run("--sysfs-root", root, "mdev", "list", "--json").output)
    assert listed == [{"uuid": U1, "parent": "mtty", "type": "mtty-2", "driver": "mtty",
                       "iommu_group": group(root, U1), "guests": None, "held_by": []}]


def test_create_again_is_nothing_to_do_and_another_type_is_refused(run, root: Path) -> None:
    assert create(run, root).exit_code == 0
    again = create(run, root)
    assert again.exit_code == 0 and "already exists on mtty as mtty-2" in again.output
    other = create(run, root, "mtty", "mtty-1")
    assert other.exit_code == 4 and "exists already, on mtty as mtty-2" in other.output


def test_homogeneous_vgpu_one_type_takes_the_gpu(run, root: Path) -> None:
    assert create(run, root, T4, "nvidia-226").exit_code == 0
    left = available(run, root, T4)
    assert left["nvidia-226"] == 7 and all(n == 0 for k, n in left.items() if k != "nvidia-226")
    refused = create(run, root, T4, "nvidia-228", U2)
    assert refused.exit_code == 4
    assert "has 0 instance(s) of nvidia-228 left" in refused.output
    assert not mdev_dir(root, U2).exists()
    assert run("--sysfs-root", root, "mdev", "remove", U1).exit_code == 0
    assert available(run, root, T4)["nvidia-228"] == 2


def test_exhaustion_is_refused_before_any_write(run, root: Path, mocker) -> None:
    assert create(run, root, GVT, "i915-GVTg_V5_4").exit_code == 0
    from pcimgr.host.sysfs import Sysfs
    write = mocker.spy(Sysfs, "write_attr")
    r = create(run, root, GVT, "i915-GVTg_V5_8", U2)
    assert r.exit_code == 4 and len(r.output.strip().splitlines()) == 1
    assert "its live mdevs (1 of i915-GVTg_V5_4) take its capacity" in r.output
    assert not mdev_dir(root, U2).exists() and write.call_count == 0
    assert not (root / ".pcimgr-state/journal.json").exists()


@pytest.mark.parametrize("argv,code,words", [
    (("mdev", "create", "mtty", "mtty-2", "--uuid", "not-a-uuid"), 2, "is not an mdev UUID"),
    (("mdev", "create", "mtty", "mtty-9"), 3, "its types: mtty-1, mtty-2"),
    (("mdev", "create", "../x", "mtty-2"), 2, "is not a valid parent name"),
    (("mdev", "create", "mtty", "mtty-2", "--attr", "../../unbind=1"), 2,
     "is not an mdev attribute"),
    (("mdev", "create", "mtty", "mtty-2", "--attr", "noequals"), 2, "is not NAME=VALUE"),
    (("mdev", "remove", U2), 3, f"no mdev {U2}"),
])
def test_bad_input_is_one_line_naming_the_fix(run, root: Path, argv, code, words) -> None:
    r = run("--sysfs-root", root, *argv)
    assert r.exit_code == code, r.output
    assert words in r.output and len(r.output.strip().splitlines()) == 1
    assert "Traceback" not in r.output
    assert os.listdir(root / "bus/mdev/devices") == []


def test_dry_run_shows_the_write_and_changes_nothing(run, root: Path) -> None:
    r = create(run, root, "mtty", "mtty-2", U1, "--dry-run")
    assert r.exit_code == 0
    assert (f"echo {U1} > /sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create"
            in r.output)
    assert not mdev_dir(root, U1).exists()


def test_an_attribute_the_mdev_lacks_rolls_the_create_back(run, root: Path) -> None:
    r = create(run, root, "mtty", "mtty-2", U1, "--attr", "assign_adapter=5")
    assert r.exit_code == 7, r.output
    assert "has no attribute 'assign_adapter'" in r.output and "rolled back" in r.output
    assert not mdev_dir(root, U1).exists()
    assert available(run, root, "mtty") == {"mtty-1": 24, "mtty-2": 12}


def test_a_kernel_refusal_at_create_leaves_nothing(run, root: Path, mocker) -> None:
    from pcimgr.host.sysfs import Sysfs
    real = Sysfs.write_attr

    def refuse(self, rel, value):
        if rel.endswith("/create"):
            raise OSError(28, "No space left on device")
        return real(self, rel, value)
    mocker.patch.object(Sysfs, "write_attr", refuse)
    r = create(run, root)
    assert r.exit_code == 7 and "No space left on device" in r.output
    assert os.listdir(root / "bus/mdev/devices") == []


# -- remove -------------------------------------------------------------------------

def test_remove_is_refused_while_a_process_holds_the_group(run, root: Path) -> None:
    assert create(run, root).exit_code == 0
    SimulatedMachine(str(root)).kernel.hold_vfio(group(root, U1), "qemu-system-x86[4242]")
    listed = json.loads(run("--sysfs-root", root, "mdev", "list", "--json").output)
    assert listed[0]["held_by"] == ["qemu-system-x86[4242]"]
    r = run("--sysfs-root", root, "mdev", "remove", U1)
    assert r.exit_code == 4 and "open by qemu-system-x86[4242]" in r.output
    assert mdev_dir(root, U1).exists()
    number = group(root, U1)
    SimulatedMachine(str(root)).kernel.release_vfio(number)
    gone = run("--sysfs-root", root, "mdev", "remove", U1)
    assert gone.exit_code == 0, gone.output
    assert not mdev_dir(root, U1).exists() and gone.output.strip().endswith("No mdevs.")
    assert available(run, root, "mtty") == {"mtty-1": 24, "mtty-2": 12}
    assert not (root / "dev/vfio" / str(number)).exists()
    assert not (root / "kernel/iommu_groups" / str(number)).exists()


# -- kills ----------------------------------------------------------------------------

def test_killed_after_the_create_write_is_undone_by_the_next_change(run, root: Path) -> None:
    code = run_killed_after("/create", "--sysfs-root", str(root), "mdev", "create", "mtty",
                            "mtty-2", "--uuid", U1)
    assert code == 9 and mdev_dir(root, U1).exists()
    r = create(run, root, "mtty", "mtty-1", U2)
    assert r.exit_code == 0, r.output
    assert "found an unfinished `mdev create mtty mtty-2" in r.output
    assert "rolled back: the host is as it was before" in r.output
    assert not mdev_dir(root, U1).exists() and mdev_dir(root, U2).exists()
    assert available(run, root, "mtty") == {"mtty-1": 23, "mtty-2": 11}


@needs_strace
def test_sigkill_from_outside_at_the_create_write_then_recover(root: Path) -> None:
    killed = pcimgr(root, "mdev", "create", "mtty", "mtty-2", "--uuid", U1,
                    inject="write:signal=SIGKILL:when=2+")
    assert killed.returncode == -signal.SIGKILL
    after = pcimgr(root, "recover")
    assert after.returncode == 0, after.stderr
    assert not mdev_dir(root, U1).exists()
    assert (root / "devices/virtual/mtty/mtty/mdev_supported_types/mtty-2/available_instances"
            ).read_text() == "12\n"


# -- definitions ----------------------------------------------------------------------

def definition(root: Path, parent: str, uuid: str) -> Path:
    return root / "etc/mdevctl.d" / parent / uuid


def test_define_writes_mdevctls_format_and_list_defined_shows_drift(run, root: Path) -> None:
    r = run("--sysfs-root", root, "mdev", "define", "mtty", "mtty-2", "--uuid", U1, "--auto")
    assert r.exit_code == 0, r.output
    path = definition(root, "mtty", U1)
    assert json.loads(path.read_text()) == {"mdev_type": "mtty-2", "start": "auto",
                                            "attrs": []}
    assert path.read_text().startswith('{\n  "mdev_type": "mtty-2",')  # serde's pretty form
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    rows = json.loads(run("--sysfs-root", root, "mdev", "list", "--defined", "--json").output)
    assert rows == [{"uuid": U1, "parent": "mtty", "type": "mtty-2", "start": "auto",
                     "attrs": [], "state": "stopped"}]
    assert run("--sysfs-root", root, "mdev", "start", U1).exit_code == 0
    assert mdev_dir(root, U1).exists()
    rows = json.loads(run("--sysfs-root", root, "mdev", "list", "--defined", "--json").output)
    assert rows[0]["state"] == "running"


def test_define_a_running_mdev_takes_its_parent_and_type(run, root: Path) -> None:
    assert create(run, root, GVT, "i915-GVTg_V5_8").exit_code == 0
    r = run("--sysfs-root", root, "mdev", "define", "--uuid", U1)
    assert r.exit_code == 0, r.output
    assert json.loads(definition(root, GVT, U1).read_text())["mdev_type"] == "i915-GVTg_V5_8"
    mismatch = run("--sysfs-root", root, "mdev", "define", GVT, "i915-GVTg_V5_4", "--uuid", U1)
    assert mismatch.exit_code == 2 and "runs on 0000:00:02.0 as i915-GVTg_V5_8" in mismatch.output


def test_start_parent_starts_the_auto_definitions_only(run, root: Path) -> None:
    run("--sysfs-root", root, "mdev", "define", "mtty", "mtty-1", "--uuid", U1, "--auto")
    run("--sysfs-root", root, "mdev", "define", "mtty", "mtty-1", "--uuid", U2)
    r = run("--sysfs-root", root, "mdev", "start-parent", "mtty")
    assert r.exit_code == 0, r.output
    assert mdev_dir(root, U1).exists() and not mdev_dir(root, U2).exists()
    again = run("--sysfs-root", root, "mdev", "start-parent", "mtty")
    assert again.exit_code == 0 and f"mdev {U1} is running already" in again.output


def test_undefine_keeps_the_running_mdev(run, root: Path) -> None:
    run("--sysfs-root", root, "mdev", "define", "mtty", "mtty-1", "--uuid", U1)
    run("--sysfs-root", root, "mdev", "start", U1)
    r = run("--sysfs-root", root, "mdev", "undefine", U1)
    assert r.exit_code == 0 and not definition(root, "mtty", U1).exists()
    assert mdev_dir(root, U1).exists()


@pytest.mark.parametrize("content,words", [
    ("{", "not valid JSON"),
    ('{"mdev_type": "mtty-2"}', "its start is None"),
    ('{"mdev_type": "mtty-2", "start": "auto", "attrs": [{"../unbind": "1"}]}',
     "is not an mdev attribute"),
    ('{"mdev_type": "../../x", "start": "auto"}', "is not a valid mdev type name"),
])
def test_a_damaged_definition_is_reported_and_never_started(run, root: Path, content,
                                                            words) -> None:
    path = definition(root, "mtty", U1)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    r = run("--sysfs-root", root, "mdev", "list", "--defined")
    assert r.exit_code == 0 and "No mdev definitions." in r.stdout
    assert words in r.stderr and str(path) in r.stderr
    started = run("--sysfs-root", root, "mdev", "start-parent", "mtty")
    assert started.exit_code == 0 and not mdev_dir(root, U1).exists()


def test_a_definition_that_is_a_link_is_not_followed(run, root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "planted"
    elsewhere.write_text('{"mdev_type": "mtty-2", "start": "auto", "attrs": []}')
    path = definition(root, "mtty", U1)
    path.parent.mkdir(parents=True)
    path.symlink_to(elsewhere)
    r = run("--sysfs-root", root, "mdev", "start-parent", "mtty")
    assert "symbolic link" in r.stderr and not mdev_dir(root, U1).exists()


def test_a_planted_journal_step_naming_a_path_is_refused(run, root: Path) -> None:
    plant_journal(root, {"kind": "mdev-remove", "module": "pcimgr.mdev.steps", "address": U1,
                         "parent": "mtty", "type_id": "mtty-2",
                         "attrs": [["../../../bus/pci/rescan", "1"]]})
    r = create(run, root)
    assert r.exit_code != 0 and "is not an mdev attribute" in r.output
    assert not mdev_dir(root, U1).exists()


# -- doctor: Debian 12's mdevctl rule --------------------------------------------------

DEBIAN_RULE = (Path(__file__).parent / "data/60-mdevctl.rules")


def with_debian_mdevctl(root: Path) -> None:
    """What Debian 12's mdevctl 1.2.0 installs: its program in /usr/bin, a rule naming
    /usr/sbin (the rule as the package ships it: tests/data/60-mdevctl.rules)."""
    (root / "lib/udev/rules.d").mkdir(parents=True)
    (root / "lib/udev/rules.d/60-mdevctl.rules").write_text(DEBIAN_RULE.read_text())
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/mdevctl").write_text("#!/bin/sh\n")
    (root / "usr/bin/mdevctl").chmod(0o755)


def doctor_check(run, root: Path) -> dict:
    r = run("--sysfs-root", root, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(r.output)["checks"]}
    return checks.get("mdev-autostart")


def test_doctor_finds_and_fixes_debians_mdevctl_rule(run, root: Path) -> None:
    assert doctor_check(run, root)["status"] == "n/a"  # parents, no mdevctl
    with_debian_mdevctl(root)
    check = doctor_check(run, root)
    assert check["status"] == "warn"
    assert "runs /usr/sbin/mdevctl, which is not there (mdevctl is /usr/bin/mdevctl)" \
        in check["detail"]
    dry = run("--sysfs-root", root, "doctor", "--fix", "--dry-run")
    assert f"+++ {root}/etc/udev/rules.d/60-mdevctl.rules" in dry.output
    assert not (root / "etc/udev/rules.d/60-mdevctl.rules").exists()
    fixed = run("--sysfs-root", root, "doctor", "--fix")
    assert fixed.exit_code == 0, fixed.output
    override = (root / "etc/udev/rules.d/60-mdevctl.rules").read_text()
    assert "/usr/sbin/mdevctl" not in override.split("\n", 2)[2]
    assert override.count("/usr/bin/mdevctl start-parent-mdevs %k") == 2
    # the package's own file is never edited (an upgrade would put it back)
    assert (root / "lib/udev/rules.d/60-mdevctl.rules").read_text() == DEBIAN_RULE.read_text()
    assert doctor_check(run, root)["status"] == "pass"
    again = run("--sysfs-root", root, "doctor", "--fix", "--dry-run")
    assert "60-mdevctl.rules" not in again.output


def test_doctor_says_nothing_of_mdevs_on_a_host_without_them(run, make_host) -> None:
    assert doctor_check(run, make_host("demo")) is None


def test_mdevctls_scripts_directory_is_not_a_parent(run, root: Path) -> None:
    (root / "etc/mdevctl.d/scripts.d/callouts").mkdir(parents=True)
    (root / "etc/mdevctl.d/scripts.d/notifiers").mkdir()
    r = run("--sysfs-root", root, "mdev", "list", "--defined")
    assert r.exit_code == 0 and r.stderr == "" and "No mdev definitions." in r.stdout


def test_status_shows_mdev_drift_and_exits_10(run, root: Path) -> None:
    run("--sysfs-root", root, "mdev", "define", "mtty", "mtty-2", "--uuid", U1, "--auto")
    run("--sysfs-root", root, "mdev", "define", "mtty", "mtty-1", "--uuid", U2)
    r = run("--sysfs-root", root, "status")
    assert r.exit_code == 10
    assert f"mdev {U1}  mtty mtty-2 (start auto): DRIFT\n  - not running, although it " \
        "starts with its parent (start auto)" in r.stdout
    assert f"mdev {U2}  mtty mtty-1 (start manual): ok" in r.stdout  # manual: stopped is fine
    assert run("--sysfs-root", root, "mdev", "start-parent", "mtty").exit_code == 0
    assert run("--sysfs-root", root, "status").exit_code == 0
    assert create(run, root, "mtty", "mtty-1", U2).exit_code == 0
    (root / "etc/mdevctl.d/mtty" / U2).write_text(
        '{"mdev_type": "mtty-2", "start": "manual", "attrs": []}')
    drifted = run("--sysfs-root", root, "status")
    assert drifted.exit_code == 10 and "  - running as mtty mtty-1" in drifted.stdout


# -- found by review: hostile files, journals and trees ---------------------------------

def test_a_snapshot_follows_no_link_and_waits_on_no_fifo_in_mdevctl_d(run, root: Path,
                                                                      tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("TOPSECRET")
    d = root / "etc/mdevctl.d/mtty"
    d.mkdir(parents=True)
    (d / U1).symlink_to(secret)
    os.mkfifo(d / U2)
    (root / "etc/mdevctl.d/i915").symlink_to(tmp_path)
    out = tmp_path / "snap.tar.gz"
    r = pcimgr(root, "snapshot", str(out))  # a subprocess with a timeout: a hang fails it
    assert r.returncode == 0, r.stderr
    import tarfile
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert not any("mdevctl.d" in n for n in names), [n for n in names if "mdev" in n]
        assert all(b"TOPSECRET" not in (tar.extractfile(m).read() if m.isfile() else b"")
                   for m in tar.getmembers())


def test_recovery_never_removes_an_mdev_a_process_holds(run, root: Path) -> None:
    assert create(run, root).exit_code == 0
    SimulatedMachine(str(root)).kernel.hold_vfio(group(root, U1), "qemu-system-x86[9]")
    plant_journal(root, {"kind": "mdev-create", "module": "pcimgr.mdev.steps", "address": U1,
                         "parent": "mtty", "type_id": "mtty-2", "attrs": []})
    r = run("--sysfs-root", root, "recover")
    assert r.exit_code != 0 and "qemu-system-x86[9]" in r.output
    assert mdev_dir(root, U1).exists()


def test_a_journal_step_with_a_uuid_not_as_the_kernel_names_it_is_refused(run, root) -> None:
    plant_journal(root, {"kind": "mdev-create", "module": "pcimgr.mdev.steps",
                         "address": U1.upper(), "parent": "mtty", "type_id": "mtty-2",
                         "attrs": []})
    r = run("--sysfs-root", root, "recover")
    assert r.exit_code == 11 and "not a UUID as the kernel names an mdev" in r.output


@pytest.mark.parametrize("plant", ["nested", "readme", "upper", "escape", "twice"])
def test_one_bad_entry_in_mdevctl_d_is_one_warning_and_the_rest_still_start(
        run, root: Path, plant: str) -> None:
    top = root / "etc/mdevctl.d"
    (top / "mtty").mkdir(parents=True)
    good = '{"mdev_type": "mtty-1", "start": "auto", "attrs": []}'
    (top / "mtty" / U1).write_text(good)
    if plant == "nested":
        (top / "mtty" / U2).write_text("[" * 200000)
    elif plant == "readme":
        (top / "README").write_text("not a parent\n")
    elif plant == "upper":
        (top / "mtty" / U2.upper()).write_text(good)
    elif plant == "escape":
        (top / "mtty" / "z\x1b]0;T\x07").write_text(good)
    else:
        (top / "zz-other").mkdir()
        (top / "zz-other" / U1).write_text(good)
    listed = run("--sysfs-root", root, "mdev", "list", "--defined", "--json")
    assert listed.exit_code == 0, listed.output
    assert [d["uuid"] for d in json.loads(listed.stdout)] == [U1]
    assert "pcimgr: warning:" in listed.stderr and "\x1b" not in listed.stderr
    started = run("--sysfs-root", root, "mdev", "start-parent", "mtty")
    assert started.exit_code == 0, started.output
    assert mdev_dir(root, U1).exists() and not mdev_dir(root, U2).exists()


def test_start_parent_starts_the_others_when_one_definition_is_stale(run, root: Path) -> None:
    top = root / "etc/mdevctl.d/mtty"
    top.mkdir(parents=True)
    (top / U1).write_text('{"mdev_type": "mtty-9", "start": "auto", "attrs": []}')
    (top / U2).write_text('{"mdev_type": "mtty-1", "start": "auto", "attrs": []}')
    r = run("--sysfs-root", root, "mdev", "start-parent", "mtty")
    assert r.exit_code == 0, r.output
    assert f"not starting mdev {U1}: mtty has no mdev type 'mtty-9'" in r.output
    assert mdev_dir(root, U2).exists()


def test_a_parent_given_in_short_pci_form_is_the_kernels_name(run, root: Path) -> None:
    r = run("--sysfs-root", root, "mdev", "define", "00:02.0", "i915-GVTg_V5_8", "--uuid", U1)
    assert r.exit_code == 0, r.output
    assert (root / "etc/mdevctl.d/0000:00:02.0" / U1).exists()
    assert run("--sysfs-root", root, "mdev", "types", "00:02.0").exit_code == 0


def test_odd_digits_in_the_tree_are_no_internal_error(run, root: Path) -> None:
    assert create(run, root).exit_code == 0
    link = mdev_dir(root, U1) / "iommu_group"
    link.unlink()
    link.symlink_to("../../../kernel/iommu_groups/\u00b2")
    r = run("--sysfs-root", root, "mdev", "list", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["iommu_group"] is None


def test_doctor_fix_on_a_one_line_override(run, root: Path) -> None:
    with_debian_mdevctl(root)
    (root / "etc/udev/rules.d").mkdir(parents=True)
    (root / "etc/udev/rules.d/60-mdevctl.rules").write_text(
        '# pcimgr doctor --fix RUN+="/usr/sbin/mdevctl start-parent-mdevs %k"')
    r = run("--sysfs-root", root, "doctor", "--fix", "--dry-run")
    assert r.exit_code == 0 and "internal error" not in r.output


def test_mdev_remove_stops_when_libvirt_cannot_say_who_has_it(run, root: Path) -> None:
    assert create(run, root).exit_code == 0
    r = run("--sysfs-root", root, "--connect", "qemu+unix:///system?socket=/nonexistent",
            "mdev", "remove", U1)
    assert r.exit_code != 0 and mdev_dir(root, U1).exists()


def test_the_whole_apply_starts_the_auto_mdevs_too(run, root: Path) -> None:
    run("--sysfs-root", root, "mdev", "define", "mtty", "mtty-2", "--uuid", U1, "--auto")
    run("--sysfs-root", root, "mdev", "define", "mtty", "mtty-1", "--uuid", U2)
    r = run("--sysfs-root", root, "apply")
    assert r.exit_code == 0, r.output
    assert f"mtty: create mdev {U1} of type mtty-2" in r.output
    assert mdev_dir(root, U1).exists() and not mdev_dir(root, U2).exists()  # manual stays
    again = run("--sysfs-root", root, "apply")
    assert again.exit_code == 0 and again.output == "The host matches the definitions.\n"
