"""A simulated host is confined: pcimgr takes one only from its owner, never writes through
a link that leaves it, never asks the machine's own libvirt about it, and never installs
its udev files into the real /etc."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import driver_of

PAIR = ("0000:04:00.0", "0000:04:00.1")


def test_write_through_a_link_out_of_the_host_is_refused(run, demo_root: Path,
                                                         tmp_path: Path) -> None:
    outside = tmp_path / "real-unbind"
    outside.write_text("")
    unbind = demo_root / "bus/pci/drivers/e1000e/unbind"
    unbind.unlink()
    unbind.symlink_to(outside)
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 7 and "outside the simulated host" in r.output
    assert outside.read_text() == ""
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


@pytest.mark.parametrize("spoil", ["group-writable root", "world-writable marker",
                                   "foreign owner", "linked marker"])
def test_untrusted_simulated_host_is_refused(run, demo_root: Path, tmp_path: Path,
                                             spoil: str) -> None:
    marker = demo_root / ".pcimgr-simulated-host.json"
    if spoil == "group-writable root":
        os.chmod(demo_root, 0o775)
    elif spoil == "world-writable marker":
        os.chmod(marker, 0o666)
    elif spoil == "foreign owner":
        if os.geteuid() != 0:
            pytest.skip("giving a directory away needs root")
        os.chown(demo_root, 65534, 65534)
    else:
        moved = tmp_path / "marker.json"
        marker.rename(moved)
        marker.symlink_to(moved)
    r = run("--sysfs-root", demo_root, "list")
    assert r.exit_code == 4 and r.output.count("\n") == 1
    assert "refusing the simulated host" in r.output
    if spoil == "foreign owner":  # what root's tar keeps: said, with the way to accept it
        assert f"take it: `chown -R 0 {demo_root}`" in r.output
        subprocess.run(["chown", "-R", "0", str(demo_root)], check=True)
        assert run("--sysfs-root", demo_root, "list").exit_code == 0


@pytest.mark.parametrize("args", [("assign", "04:00.0", "vm1", "--group"),
                                  ("release", "04:00.0")])
def test_no_libvirt_for_a_simulated_host_without_connect(run, demo_root: Path, monkeypatch,
                                                        args: tuple[str, ...]) -> None:
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    r = run("--sysfs-root", demo_root, *args)
    assert r.exit_code == 2 and "--connect" in r.output and r.output.count("\n") == 1
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


def test_sim_create_is_private_whatever_the_umask(run, tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        r = run("sim", "create", tmp_path / "h")
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert os.stat(tmp_path / "h").st_mode & 0o777 == 0o755
    assert run("--sysfs-root", tmp_path / "h", "list").exit_code == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_sim_create_refuses_someone_elses_directory(run, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    subprocess.run(["chown", "65534:65534", str(theirs)], check=True)
    r = run("sim", "create", theirs)
    assert r.exit_code == 2 and "uid 65534" in r.output and os.listdir(theirs) == []


@pytest.mark.parametrize("content", ["", "{", "[1, 2]", '{"host": []}', "\xff\xfe"])
def test_a_damaged_marker_is_one_line(run, demo_root: Path, content: str) -> None:
    (demo_root / ".pcimgr-simulated-host.json").write_text(content, errors="surrogateescape")
    r = run("--sysfs-root", demo_root, "list", "--all")
    assert r.exit_code == 11 and r.output.count("\n") == 1, r.output
    assert "marker" in r.output and "pcimgr sim create" in r.output


@pytest.mark.parametrize("spoil", ["group-writable parent", "world-writable grandparent",
                                   "parent of another user"])
def test_a_tree_below_a_directory_others_may_write_is_refused(run, tmp_path: Path,
                                                             spoil: str) -> None:
    """The owner of a directory above the tree could swap it after the check (ssh's rule)."""
    grand = tmp_path / "grand"
    parent = grand / "parent"
    parent.mkdir(parents=True, mode=0o755)
    os.chmod(grand, 0o755)
    root = parent / "host"
    assert run("sim", "create", root, "--profile", "demo").exit_code == 0
    if spoil == "group-writable parent":
        os.chmod(parent, 0o775)
    elif spoil == "world-writable grandparent":
        os.chmod(grand, 0o777)
    else:
        if os.geteuid() != 0:
            pytest.skip("giving a directory away needs root")
        os.chown(parent, 65534, 65534)
    r = run("--sysfs-root", root, "list")
    assert r.exit_code == 4 and r.output.count("\n") == 1, r.output
    assert "another user could swap the tree" in r.output


def test_a_tree_below_a_sticky_directory_is_taken(run, tmp_path: Path) -> None:
    sticky = tmp_path / "shared"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    root = sticky / "host"
    assert run("sim", "create", root, "--profile", "demo").exit_code == 0
    assert run("--sysfs-root", root, "list").exit_code == 0
