"""`detach --owner USER[:GROUP]` and `define --owner`: a function's VFIO device nodes for a
user who is not root (DPDK, rootless QEMU, containers), undone with the driver and by a
rollback, kept across reboots by the definition."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import driver_of

PAIR = ("0000:04:00.0", "0000:04:00.1")
NOBODY = "nobody:nogroup"


def node(root: Path, group: int = 5) -> Path:
    return root / "dev/vfio" / str(group)


def owner(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, info.st_mode & 0o777


def test_detach_owner_gives_the_group_node_and_rebind_takes_it(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group", "--owner", NOBODY)
    assert r.exit_code == 0, r.output
    assert "0000:04:00.0: its VFIO device nodes to nobody:nogroup" in r.output
    if os.geteuid() == 0:
        assert owner(node(demo_root)) == (65534, 65534, 0o660)
    assert run("--sysfs-root", demo_root, "rebind", *PAIR).exit_code == 0
    assert not node(demo_root).exists()
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 0 and owner(node(demo_root)) == (os.geteuid(), os.getegid(), 0o600)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="opening as another user needs root and setpriv")
def test_the_user_can_open_the_node_and_nobody_else(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    here = demo_root / "dev/vfio"
    while here != here.parent:  # the directories down to the node let others through
        if here.stat().st_uid == os.geteuid():
            os.chmod(here, here.stat().st_mode & 0o7777 | 0o011)
        here = here.parent

    def opens(as_user: str) -> bool:
        return subprocess.run(["setpriv", f"--reuid={as_user}", "--regid=nogroup",
                               "--clear-groups", "sh", "-c", f"exec 3<>{node(demo_root)}"],
                              capture_output=True).returncode == 0
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0
    assert not opens("nobody")
    assert run("--sysfs-root", demo_root, "rebind", *PAIR).exit_code == 0
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group", "--owner",
               "nobody").exit_code == 0
    assert opens("nobody")


def test_a_failure_giving_the_nodes_rolls_the_detach_back(run, demo_root: Path, mocker) -> None:  # type: ignore[no-untyped-def]
    mocker.patch("pcimgr.host.sysfs.Sysfs.set_dev_node_owner",
                 side_effect=OSError(errno.EPERM, "Operation not permitted"))
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group", "--owner", NOBODY)
    assert r.exit_code == 7 and "rolled back" in r.output, r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


@pytest.mark.parametrize("args, words", [
    (["detach", "04:00.0", "--group", "--owner", "no-such-user"], "no user 'no-such-user'"),
    (["detach", "04:00.0", "--group", "--owner", "nobody:no-such-group"],
     "no group 'no-such-group'"),
    (["detach", "06:00.0", "--driver", "pci-stub", "--owner", "nobody"],
     "not with pci-stub"),
    (["define", "06:00.0", "--driver", "pci-stub", "--owner", "nobody"],
     "define it with --driver vfio-pci"),
])
def test_bad_owners_are_one_line_and_change_nothing(run, demo_root: Path, args: list[str],  # type: ignore[no-untyped-def]
                                                     words: str) -> None:
    r = run("--sysfs-root", demo_root, *args)
    assert r.exit_code == 2 and words in r.output and len(r.output.strip().splitlines()) == 1
    assert driver_of(demo_root, "0000:06:00.0") == "i40e"
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert not (demo_root / ".pcimgr-config/devices").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_define_owner_applies_at_every_apply_and_status_sees_drift(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    r = run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci", "--group",
            "--owner", NOBODY)
    assert r.exit_code == 0, r.output
    data = json.loads((demo_root / ".pcimgr-config/devices/0000:04:00.0.json").read_text())
    assert data["owner"] == NOBODY
    assert run("--sysfs-root", demo_root, "apply").exit_code == 0
    assert owner(node(demo_root)) == (65534, 65534, 0o660)
    assert run("--sysfs-root", demo_root, "status").exit_code == 0
    os.chown(node(demo_root), 0, 0)
    r = run("--sysfs-root", demo_root, "status", "--json")
    drift = {e["address"]: e["drift"] for e in json.loads(r.output.split("\npcimgr:")[0])}
    assert r.exit_code == 10 and drift["0000:04:00.0"] == [
        "/dev/vfio/5 is 0:0 mode 660, defined nobody:nogroup"]
    assert run("--sysfs-root", demo_root, "apply").exit_code == 0
    assert owner(node(demo_root)) == (65534, 65534, 0o660)
    assert "The host matches the definitions." in run("--sysfs-root", demo_root,
                                                     "apply").output
