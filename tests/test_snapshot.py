"""Snapshots (issue 24): `pcimgr snapshot FILE` records what pcimgr reads of a host, read
commands on `--snapshot FILE` (or an unpacked one) answer as on that host and nothing of
this one, changes are refused, and a hostile archive is refused in one line."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from pcimgr.host.snapshot import layout
from pcimgr.sim import profiles
from tests.conftest import tree

READS = (("list", "--all", "--json"), ("groups", "--json"), ("tree", "--json"),
         ("status", "--json"), ("vfs", "list", "--json"), ("history", "--json"),
         ("pool", "list", "--json"), ("export", "device-plugin"))


def snapshot(run: Callable[..., Result], root: Path, out: Path, *extra: str) -> Result:
    r = run("--sysfs-root", root, *extra, "snapshot", out)
    assert r.exit_code == 0, r.output
    return r


def addresses(run: Callable[..., Result], *where: str | Path) -> list[str]:
    r = run(*where, "list", "--all", "--json")
    assert r.exit_code == 0, r.output
    return [d["address"] for d in json.loads(r.stdout)]


@pytest.mark.parametrize("profile", sorted(profiles.PROFILES))
def test_every_read_of_a_snapshot_answers_as_the_host(run, make_host, tmp_path, profile) -> None:
    root = make_host(profile)
    some = addresses(run, "--sysfs-root", root)
    # a definition to read back: the first function the host lets be defined
    assert any(run("--sysfs-root", root, "define", a, "--driver", "vfio-pci",
                   "--group").exit_code == 0 for a in some)
    out = tmp_path / "host.pcimgr-snapshot.tar.gz"
    r = snapshot(run, root, out)
    assert f"in {out}: {len(os.listdir(root / 'bus/pci/devices'))} PCI functions" in r.output
    for args in (*READS, *(("show", a, "--json") for a in some),
                 *(("xml", a) for a in some)):
        live, recorded = run("--sysfs-root", root, *args), run("--snapshot", out, *args)
        assert (recorded.exit_code, recorded.stdout) == (live.exit_code, live.stdout), args
    live = json.loads(run("--sysfs-root", root, "doctor", "--json").stdout)["checks"]
    recorded = json.loads(run("--snapshot", out, "doctor", "--json").stdout)["checks"]
    skip = {"libvirt", "root"}  # what the reading host is asked, not the recorded one
    assert [c for c in recorded if c["name"] not in skip] == \
        [c for c in live if c["name"] not in skip]


def unpacked_by_tar(run: Callable[..., Result], root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A snapshot of ROOT, and it unpacked by tar as an administrator would."""
    out = tmp_path / "s.tgz"
    snapshot(run, root, out)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xzf", str(out), "-C", str(unpacked)], check=True)
    return out, unpacked


def test_a_snapshot_is_read_only(run, demo_root, tmp_path) -> None:
    out, unpacked = unpacked_by_tar(run, demo_root, tmp_path)
    before = tree(unpacked)
    for args in (("detach", "04:00.0", "--group"), ("define", "05:00.0", "--vfs", "2"),
                 ("vfs", "create", "05:00.0", "2"), ("apply",), ("install-udev",),
                 ("rebind", "04:00.0"), ("doctor", "--fix"), ("recover",)):
        for where in (("--snapshot", str(out)), ("--sysfs-root", str(unpacked))):
            r = run(*where, *args)
            assert r.exit_code == 4, (args, r.output)
            assert "refusing to change" in r.output and "read only" in r.output, r.output
            assert "Traceback" not in r.output
    assert tree(unpacked) == before
    # a dry run plans from the recorded facts: what the change would do on that host
    r = run("--snapshot", out, "detach", "04:00.0", "--group", "--dry-run")
    assert r.exit_code == 0 and "Plan for `pcimgr detach" in r.output, r.output


def test_nothing_of_this_host_is_borrowed(run, make_host, tmp_path) -> None:
    """A tree that is neither /sys, a simulated host nor a snapshot: its host facts are
    unknown, said once, shown as such; this machine's interfaces never appear."""
    root = make_host("demo")
    foreign = tmp_path / "captured"
    shutil.copytree(root, foreign, symlinks=True)
    (foreign / ".pcimgr-simulated-host.json").unlink()
    r = run("--sysfs-root", foreign, "list", "--all")
    assert r.exit_code == 0, r.output
    assert r.stderr.count("is not this host's /sys") == 1 and "unknown" in r.stderr
    live_names = os.listdir("/sys/class/net")
    assert not any(f"{name}:" in r.stdout for name in live_names if name != "lo"), r.stdout
    listed = json.loads(run("--sysfs-root", foreign, "list", "--all", "--json").stdout)
    assert listed and all("host use unknown" in d["host_use"] for d in listed)
    # the simulated host's own address on eno1 is not in the copy's facts either
    assert not any("192.0.2.10" in u for d in listed for u in d["host_use"])
    r = run("--sysfs-root", foreign, "detach", "04:00.0", "--group")
    assert r.exit_code == 4 and "not this host's /sys" in r.output, r.output


def test_guests_are_recorded_with_their_pci_devices_only(run, demo_root, tmp_path,
                                                          libvirt_uri, make_domain) -> None:
    vm = make_domain("snap")
    r = run("--sysfs-root", demo_root, "--connect", libvirt_uri, "assign", "04:00.0", vm,
            "--group")
    assert r.exit_code == 0, r.output
    out = tmp_path / "s.tgz"
    snapshot(run, demo_root, out, "--connect", libvirt_uri)
    live = run("--sysfs-root", demo_root, "--connect", libvirt_uri, "list", "--json")
    recorded = run("--snapshot", out, "list", "--json")
    assert recorded.stdout == live.stdout
    assert {d["address"]: d["holders"] for d in json.loads(recorded.stdout)}[
        "0000:04:00.0"] == [vm]
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile(layout.MANIFEST))
    (guest,) = [g for g in manifest["guests"] if g["name"] == vm]
    assert "<hostdev" in guest["config_xml"] and "<memory" not in guest["config_xml"]
    assert "pcie-root-port" not in guest["config_xml"]  # nothing but its PCI devices
    assert run("--sysfs-root", demo_root, "--connect", libvirt_uri, "release",
               "04:00.0").exit_code == 0
    # without libvirt the guests are unknown, not "none"
    assert run("--sysfs-root", demo_root, "snapshot", out, "--no-guests").exit_code == 0
    listed = json.loads(run("--snapshot", out, "list", "--json").stdout)
    assert all(d["holders"] is None for d in listed)


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _good_start() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [(_member("sys", tarfile.DIRTYPE), None), (_member("sys/bus", tarfile.DIRTYPE), None)]


HOSTILE = {
    "absolute": [(_member("/etc/passwd"), b"x")],
    "dotdot": [*_good_start(), (_member("sys/../../escape"), b"x")],
    "link out": [*_good_start(), (_member("sys/bus/out", tarfile.SYMTYPE, "../../../etc"),
                                  None)],
    "absolute link": [*_good_start(), (_member("sys/bus/out", tarfile.SYMTYPE, "/etc"), None)],
    # climbs through another link: lexically inside, really outside
    "link through a link": [*_good_start(),
                            (_member("sys/bus/up", tarfile.SYMTYPE, "../.."), None),
                            (_member("sys/bus/out", tarfile.SYMTYPE, "up/../../.."), None)],
    "below a link": [*_good_start(), (_member("sys/bus/l", tarfile.SYMTYPE, "../bus"), None),
                     (_member("sys/bus/l/file"), b"x")],
    "device": [*_good_start(), (_member("dev/null", tarfile.CHRTYPE), None)],
    "fifo": [*_good_start(), (_member("sys/bus/fifo", tarfile.FIFOTYPE), None)],
    "hard link": [*_good_start(), (_member("sys/bus/h", tarfile.LNKTYPE, "sys/bus"), None)],
    "before its directory": [(_member("sys/bus/x"), b"x")],
    "outside the layout": [(_member("etc", tarfile.DIRTYPE), None)],
    "no manifest": _good_start(),
    "bad manifest": [(_member(layout.MANIFEST), b'{"format": "pcimgr-snapshot", "version": 1, '
                                                b'"host": {"mounts": {"sda": 7}}}')],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_snapshot_is_refused_in_one_line(run, tmp_path, monkeypatch, case) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = tmp_path / "hostile.tgz"
    _archive(path, HOSTILE[case])
    r = run("--snapshot", path, "list")
    assert r.exit_code == 11, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert any(s in r.output for s in ("take it again", "take the snapshot again",
                                       "take one with")), r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "escape").exists()
    assert os.listdir(tmp_path / "tmp") == []  # what was unpacked is gone


def test_not_a_snapshot(run, tmp_path) -> None:
    (tmp_path / "text").write_text("hello\n")
    os.mkfifo(tmp_path / "fifo")
    for path, code, said in ((tmp_path / "text", 11, "not a pcimgr snapshot"),
                             (tmp_path / "fifo", 2, "not a regular file"),
                             (tmp_path / "missing", 2, "cannot read the snapshot"),
                             (tmp_path, 2, "not a regular file")):
        r = run("--snapshot", path, "list")
        assert r.exit_code == code and said in r.output, r.output
    r = run("--snapshot", tmp_path / "text", "--sysfs-root", tmp_path, "list")
    assert r.exit_code == 2 and "give one of them" in r.output


def test_an_unpacked_snapshot_of_another_user_is_refused(run, demo_root, tmp_path) -> None:
    _, unpacked = unpacked_by_tar(run, demo_root, tmp_path)
    assert addresses(run, "--sysfs-root", unpacked) == addresses(run, "--sysfs-root",
                                                                 demo_root)
    if os.geteuid() == 0:
        os.chown(unpacked / layout.MANIFEST, 65534, 65534)
        r = run("--sysfs-root", unpacked, "list")
        assert r.exit_code == 4 and "belongs to uid 65534" in r.output, r.output
        assert f"chown -R {os.geteuid()}" in r.output


def test_snapshot_to_standard_output_and_a_failed_write_leaves_nothing(run, demo_root,
                                                                      tmp_path) -> None:
    pcimgr = shutil.which("pcimgr", path=os.path.dirname(sys.executable))
    assert pcimgr
    r = subprocess.run([pcimgr, "--sysfs-root", str(demo_root), "snapshot", "-"],
                       capture_output=True)
    assert r.returncode == 0 and r.stdout[:2] == b"\x1f\x8b", r.stderr  # gzip
    (tmp_path / "s.tgz").write_bytes(r.stdout)
    assert addresses(run, "--snapshot", tmp_path / "s.tgz") == addresses(
        run, "--sysfs-root", demo_root)
    # the disk full at the write: the old file stays as it was, no temporary is left
    (tmp_path / "old.tgz").write_bytes(b"old")
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (scripts/run test installs it)")
    r = subprocess.run([strace, "-f", "-o", "/dev/null", "-e", "inject=write:error=ENOSPC:when=3",
                        pcimgr, "--sysfs-root", str(demo_root), "snapshot",
                        str(tmp_path / "old.tgz")], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (tmp_path / "old.tgz").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["old.tgz", "s.tgz", "sys"]
