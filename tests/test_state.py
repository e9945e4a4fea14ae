"""pcimgr's own state when it is damaged, linked, shared or refused: one line naming the
file and the way out, the host untouched, and a documented way forward (`pcimgr recover`,
`pcimgr undefine`)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import driver_of, tree

PAIR = ("0000:04:00.0", "0000:04:00.1")

# What a truncated write, a disk error or a person's editor can leave in a JSON file.
CORRUPT = {
    "empty": b"",
    "truncated": b'{"command": "detach 0000:04:00.0", "pid": 12, "steps": [{"step": {"ki',
    "garbage": b"\x00\x17\xff\xfe garbage",
    "not utf-8": b'{"command": "\xff"}',
    "a list": b"[1, 2, 3]",
    "a number": b"42",
    "null": b"null",
    "wrong types": b'{"command": 1, "pid": "x", "steps": {}}',
}


def journal(root: Path) -> Path:
    return root / ".pcimgr-state/journal.json"


def put(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(0o600)  # as pcimgr writes its files: recovery refuses a journal others may write


def one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


# -- the journal -----------------------------------------------------------------------

JOURNAL_SHAPES = CORRUPT | {
    "unknown step kind": json.dumps({"command": "x", "pid": 1, "steps": [
        {"step": {"kind": "warp", "address": PAIR[0]}, "state": "applied"}]}).encode(),
    "bad step state": json.dumps({"command": "x", "pid": 1, "steps": [
        {"step": {"kind": "reprobe", "address": PAIR[0], "original_driver": None,
                  "original_override": None}, "state": "half"}]}).encode(),
    "step field of the wrong type": json.dumps({"command": "x", "pid": 1, "steps": [
        {"step": {"kind": "reprobe", "address": 7, "original_driver": None,
                  "original_override": None}, "state": "applied"}]}).encode(),
    "missing step field": json.dumps({"command": "x", "pid": 1, "steps": [
        {"step": {"kind": "bind", "address": PAIR[0]}, "state": "applied"}]}).encode(),
    "numvfs step without its VFs": json.dumps({"command": "x", "pid": 1, "steps": [
        {"step": {"kind": "numvfs", "address": "0000:05:00.0", "count": 2, "original": 0,
                  "netdev": None, "timeout": 5, "wait_drivers": True},
         "state": "applying"}]}).encode(),
    "address that is no address": json.dumps({"command": "x", "pid": 1, "steps": [
        {"step": {"kind": "reprobe", "address": "../../etc", "original_driver": None,
                  "original_override": None}, "state": "applied"}]}).encode(),
}


@pytest.mark.parametrize("content", JOURNAL_SHAPES.values(), ids=JOURNAL_SHAPES.keys())
def test_damaged_journal_stops_changes_with_one_line(run, demo_root: Path,
                                                     content: bytes) -> None:
    put(journal(demo_root), content)
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 11
    line = one_line(r.output)
    assert str(journal(demo_root)) in line and "pcimgr recover" in line
    assert "internal error" not in line
    assert tree(demo_root) == before
    assert journal(demo_root).read_bytes() == content  # evidence kept for the person


def test_recover_shows_a_damaged_journal_then_discards_it(run, demo_root: Path) -> None:
    put(journal(demo_root), JOURNAL_SHAPES["truncated"])
    r = run("--sysfs-root", demo_root, "recover", "--dry-run")
    assert r.exit_code == 0 and "0000:04:00.0" in r.output and "--discard" in r.output
    assert journal(demo_root).exists()
    r = run("--sysfs-root", demo_root, "recover")
    assert r.exit_code == 11 and "recover --discard" in r.output.splitlines()[-1]
    assert journal(demo_root).exists()
    r = run("--sysfs-root", demo_root, "recover", "--discard")
    assert r.exit_code == 0 and "nothing was undone" in r.output
    assert not journal(demo_root).exists()
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0
    assert [driver_of(demo_root, a) for a in PAIR] == ["vfio-pci", "vfio-pci"]


def test_recover_undoes_a_readable_journal(run, demo_root: Path) -> None:
    from tests.killed import run_killed_after
    code = run_killed_after("drivers_probe", "--sysfs-root", str(demo_root), "detach",
                            "04:00.0", "--group")
    assert code == 9 and journal(demo_root).exists()
    assert driver_of(demo_root, PAIR[0]) == "vfio-pci"
    r = run("--sysfs-root", demo_root, "recover", "--dry-run")
    assert r.exit_code == 0 and "undo: 0000:04:00.0" in r.output and journal(demo_root).exists()
    r = run("--sysfs-root", demo_root, "recover")
    assert r.exit_code == 0 and "undid its" in r.output and not journal(demo_root).exists()
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert run("--sysfs-root", demo_root, "recover").output.strip() == "No unfinished transaction."


# -- records -------------------------------------------------------------------------------

RECORD_SHAPES = CORRUPT | {"driver a number": b'{"driver": 3, "override": null}',
                           "no override": b'{"driver": "e1000e"}'}


@pytest.mark.parametrize("content", RECORD_SHAPES.values(), ids=RECORD_SHAPES.keys())
def test_damaged_record_stops_rebind_before_any_write(run, demo_root: Path,
                                                      content: bytes) -> None:
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0
    record = demo_root / ".pcimgr-state/devices" / f"{PAIR[0]}.json"
    put(record, content)
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "rebind", *PAIR)
    assert r.exit_code == 11
    line = one_line(r.output)
    assert str(record) in line and "remove the file" in line
    assert tree(demo_root) == before


def test_damaged_record_stops_detach_before_any_write(run, demo_root: Path) -> None:
    put(demo_root / ".pcimgr-state/devices" / f"{PAIR[1]}.json", b"{")
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 11 and f"{PAIR[1]}.json" in one_line(r.output)
    assert tree(demo_root) == before


# -- definitions ---------------------------------------------------------------------------

DEFINITION_SHAPES = CORRUPT | {
    "other address inside": None,  # filled in by the test: a valid file under another name
    "no intent": b'{"format": 1, "address": "0000:04:00.1", "vendor_id": "8086", '
                 b'"device_id": "105e", "subsystem_vendor_id": null, '
                 b'"subsystem_device_id": null, "iommu_group": 5}',
}


@pytest.mark.parametrize("kind", DEFINITION_SHAPES.keys())
def test_damaged_definition_is_named_and_skipped(run, demo_root: Path, kind: str) -> None:
    assert run("--sysfs-root", demo_root, "define", "05:00.0", "--vfs", "2").exit_code == 0
    cfg = demo_root / ".pcimgr-config/devices"
    bad = cfg / f"{PAIR[1]}.json"
    content = DEFINITION_SHAPES[kind]
    if content is None:
        content = (cfg / "0000:05:00.0.json").read_bytes()
    put(bad, content)
    r = run("--sysfs-root", demo_root, "status")
    assert r.exit_code == 11
    assert "0000:05:00.0" in r.output and str(bad) in r.output
    r = run("--sysfs-root", demo_root, "apply")
    assert r.exit_code == 11 and str(bad) in r.output
    assert len(os.listdir(demo_root / "bus/pci/devices/0000:05:00.0")) > 0
    assert (demo_root / "bus/pci/devices/0000:05:00.0/sriov_numvfs").read_text().strip() == "2"
    r = run("--sysfs-root", demo_root, "apply", "--device", PAIR[1])
    assert r.exit_code == 11 and str(bad) in one_line(r.output)
    r = run("--sysfs-root", demo_root, "define", PAIR[1], "--driver", "vfio-pci")
    assert r.exit_code == 11 and "undefine" in one_line(r.output)
    r = run("--sysfs-root", demo_root, "undefine", PAIR[1])
    assert r.exit_code == 0 and not bad.exists()
    assert run("--sysfs-root", demo_root, "status").exit_code == 0


# -- links ---------------------------------------------------------------------------------

@pytest.mark.parametrize("linked", [".pcimgr-state", ".pcimgr-state/devices",
                                    ".pcimgr-config", ".pcimgr-config/udev",
                                    ".pcimgr-config/devices"])
def test_linked_state_or_config_dir_is_refused(run, demo_root: Path, tmp_path: Path,
                                               linked: str) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / f"{PAIR[0]}_8086:105E.env").write_text("precious")
    (target / f"{PAIR[0]}.json").write_text("precious")
    link = demo_root / linked
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(target)
    r1 = run("--sysfs-root", demo_root, "define", PAIR[0], "--driver", "vfio-pci",
             "--group")
    r2 = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    rs = [r for r in (r1, r2) if "symbolic link" in r.output]
    assert rs, (r1.output, r2.output)
    for r in rs:
        assert r.exit_code == 11 and str(link) in one_line(r.output)
    assert sorted(os.listdir(target)) == [f"{PAIR[0]}.json", f"{PAIR[0]}_8086:105E.env"]
    assert all((target / n).read_text() == "precious" for n in os.listdir(target))


def test_linked_state_file_is_never_followed(run, demo_root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    state = demo_root / ".pcimgr-state"
    state.mkdir()
    (state / "journal.json").symlink_to(victim)
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 11 and "symbolic link" in one_line(r.output)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_state_file_that_is_no_regular_file(run, demo_root: Path, kind: str) -> None:
    path = journal(demo_root)
    path.parent.mkdir()
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 11 and str(path) in one_line(r.output)


@pytest.mark.parametrize("same", ["equal", "state inside config", "config inside state"])
def test_state_and_config_dirs_must_not_overlap(run, demo_root: Path, tmp_path: Path,
                                                same: str) -> None:
    cfg = tmp_path / "cfg"
    state = {"equal": cfg, "state inside config": cfg / "state",
             "config inside state": tmp_path}[same]
    assert run("--sysfs-root", demo_root, "--config-dir", cfg, "define", "05:00.0",
               "--vfs", "2").exit_code == 0
    r = run("--sysfs-root", demo_root, "--config-dir", cfg, "--state-dir", state, "apply")
    assert r.exit_code == 2 and "overlap" in one_line(r.output)
    assert (cfg / "devices/0000:05:00.0.json").exists()


# -- one lock per host, every changing command -------------------------------------------

def _pcimgr(*argv: str | os.PathLike, script: str | None = None) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent)}
    start = ["-c", script] if script else ["-m", "pcimgr"]
    return subprocess.Popen([sys.executable, *start, *map(str, argv)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Each define child reads the PF's definition, then dawdles before merging and writing:
# without a lock every child reads the same file and all but one MAC is lost.
_SLOW_DEFINE = """
import sys, time
from pcimgr.persist import definitions
real = definitions.load
def load(*args):
    found = real(*args)
    time.sleep(0.2)
    return found
definitions.load = load
from pcimgr.cli.app import main
main(sys.argv[1:])
"""


def test_eight_concurrent_defines_lose_nothing(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "define", "05:00.0", "--vfs", "7").exit_code == 0
    macs = [f"52:54:00:00:00:0{i}" for i in range(7)]
    procs = [_pcimgr("--sysfs-root", demo_root, "define", "05:00.0", "--vf", str(i),
                     "--mac", mac, script=_SLOW_DEFINE) for i, mac in enumerate(macs)]
    procs.append(_pcimgr("--sysfs-root", demo_root, "define", PAIR[0], "--driver", "vfio-pci",
                         "--group", script=_SLOW_DEFINE))
    results = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0] * 8, results
    data = json.loads((demo_root / ".pcimgr-config/devices/0000:05:00.0.json").read_text())
    assert {k: v["mac"] for k, v in data["vf"].items()} == {str(i): m for i, m in
                                                          enumerate(macs)}
    assert not list((demo_root / ".pcimgr-config").rglob("*.tmp.*"))


def test_different_state_dirs_still_serialise(demo_root: Path, tmp_path: Path) -> None:
    """Eight detach/rebind runs, each with its own --state-dir, on the same pair: each one
    sees the pair whole (never half-moved by another), so each ends with exit 0."""
    procs = []
    for i in range(8):
        command = ("detach", "04:00.0", "--group") if i % 2 == 0 else ("rebind", *PAIR)
        procs.append(_pcimgr("--sysfs-root", demo_root, "--state-dir", tmp_path / f"s{i}",
                             *command))
    results = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in results), results
    drivers = {driver_of(demo_root, a) for a in PAIR}
    assert len(drivers) == 1  # both on the same driver: no interleaving split the pair


def test_refused_command_leaves_no_state_behind(run, demo_root: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = run("--sysfs-root", demo_root, "--state-dir", state, "detach", "04:00.0")
    assert r.exit_code == 4
    r = run("--sysfs-root", demo_root, "--state-dir", state, "vfs", "create", "05:00.0", "x")
    assert r.exit_code == 2
    assert not state.exists()
    assert not (demo_root / ".pcimgr-state").exists()


# -- not root, not the owner ---------------------------------------------------------------

def _as_nobody(*argv: str | os.PathLike) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent),
                        "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-m", "pcimgr", *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=60)


needs_root_to_switch = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/usr/bin/setpriv"),
    reason="switching to another user needs root and setpriv")


@needs_root_to_switch
@pytest.mark.parametrize("argv", [
    ("detach", "04:00.0", "--group"),
    ("define", "04:00.0", "--driver", "vfio-pci"),
    ("install-udev",),
    ("recover",),
])
def test_non_owner_gets_one_line_naming_the_path(demo_root: Path, tmp_path: Path,
                                                 argv: tuple[str, ...]) -> None:
    os.chmod(tmp_path, 0o755)
    for p in (tmp_path.parent, tmp_path.parent.parent):
        os.chmod(p, os.stat(p).st_mode | stat.S_IXOTH)
    before = tree(demo_root)
    r = _as_nobody("--sysfs-root", demo_root, *argv)
    assert r.returncode == 5, r.stderr
    line = one_line(r.stderr)
    assert "permission denied" in line and str(demo_root) in line
    assert "internal error" not in line and "Traceback" not in r.stderr
    assert tree(demo_root) == before


@needs_root_to_switch
@pytest.mark.parametrize("argv", [("sim", "create", "/root/pcimgr-test-x"),
                                  ("--state-dir", "/etc/pcimgr-test-x", "--sysfs-root", "ROOT",
                                   "detach", "04:00.0", "--group"),
                                  ("--config-dir", "/etc/pcimgr-test-x", "--sysfs-root", "ROOT",
                                   "define", "04:00.0", "--driver", "vfio-pci", "--group")])
def test_non_root_outside_its_reach(demo_root: Path, tmp_path: Path,
                                    argv: tuple[str, ...]) -> None:
    """On a simulated host of its own, nobody still cannot write /etc or /root."""
    for p in (tmp_path, tmp_path.parent, tmp_path.parent.parent):
        os.chmod(p, os.stat(p).st_mode | stat.S_IXOTH)
    subprocess.run(["chown", "-R", "65534:65534", str(demo_root)], check=True)
    before = tree(demo_root)
    r = _as_nobody(*(str(demo_root) if a == "ROOT" else a for a in argv))
    assert r.returncode == 5, r.stderr
    line = one_line(r.stderr)
    assert "permission denied" in line and "Traceback" not in r.stderr
    assert ("/etc/pcimgr-test-x" in line or "/root/pcimgr-test-x" in line)
    assert tree(demo_root) == before
    assert not os.path.exists("/etc/pcimgr-test-x")


def test_incomplete_recovery_stops_the_command_that_found_it(run, demo_root: Path) -> None:
    """A started step whose undo fails (its function is gone): the next change says so and
    does not act on top of it (exit 7); the journal is gone, so the one after acts."""
    gone = {"kind": "bind", "address": "0000:09:00.0", "target": "vfio-pci",
            "target_override": "vfio-pci", "original_driver": "e1000e",
            "original_override": None}
    put(journal(demo_root), json.dumps({"command": "detach 0000:09:00.0", "pid": 1, "steps": [
        {"step": gone, "state": "applying"}]}).encode())
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 7
    line = one_line(r.output)
    assert "ROLLBACK INCOMPLETE" in line and "0000:09:00.0" in line
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0


@pytest.mark.parametrize("argv", [("detach", "09:00.0"), ("detach", "00:1f.6"),
                                  ("vfs", "create", "04:00.0", "2"),
                                  ("bind", "04:00.0", "nosuch"),
                                  ("define", "04:00.0", "--driver", "vfio-pci")])
def test_a_refused_change_on_a_fresh_host_creates_no_file(run, demo_root: Path,
                                                          argv: tuple[str, ...]) -> None:
    """Validate, then lock: the plan's refusal comes before the lock file is made."""
    before = sorted(p.name for p in demo_root.iterdir())
    r = run("--sysfs-root", demo_root, *argv)
    assert r.exit_code in (2, 3, 4), r.output
    assert sorted(p.name for p in demo_root.iterdir()) == before


def test_a_lock_that_is_a_directory_is_one_line(run, demo_root: Path) -> None:
    (demo_root / ".pcimgr-run/lock").mkdir(parents=True)
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 11
    assert "is a directory, not pcimgr's lock file; remove it" in one_line(r.output)
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


@pytest.mark.parametrize("option,argv", [("--state-dir", ("detach", "04:00.0", "--group")),
                                         ("--config-dir", ("status",)),
                                         ("--config-dir", ("define", "05:00.0", "--vfs", "1"))])
def test_a_directory_whose_parent_is_missing(run, demo_root: Path, tmp_path: Path,
                                             option: str, argv: tuple[str, ...]) -> None:
    """Read: nothing there yet; written: made, as its parent would be."""
    where = tmp_path / "missing/parent/dir"
    r = run("--sysfs-root", demo_root, option, where, *argv)
    assert r.exit_code == 0, r.output
    assert (where.exists() or argv == ("status",)) and "internal error" not in r.output
