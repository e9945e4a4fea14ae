"""No change path gets around the host-dependency survey or the group rule: a PF that has
its VFs already, define's group rule against the definitions (not today's drivers), and a
group's definition files written all or nothing (issue 22)."""

import dataclasses
import errno
import shutil
from pathlib import Path

import pytest

from pcimgr.plans import statefile
from pcimgr.sim import builder, profiles
from tests.conftest import driver_of, tree

PF = "0000:03:00.0"      # server: igb with 2 VFs; the host uses VF 03:10.0 (enp3s0f0v0)
USED_VF = "0000:03:10.0"


def cfg(root: Path) -> Path:
    return root / ".pcimgr-config"


def quiet_server(path: Path) -> Path:
    """The server profile without the address on its VF: nothing uses it there."""
    p = profiles.get("server")
    addresses = {k: v for k, v in p.host.addresses.items() if k != "enp3s0f0v0"}
    builder.build(str(path), dataclasses.replace(p, host=dataclasses.replace(
        p.host, addresses=addresses)))
    return path


@pytest.mark.parametrize("args", [
    ("vfs", "create", PF, "2"),
    ("vfs", "create", PF, "2", "--dry-run"),
    ("define", PF, "--vfs", "2"),
    ("--connect", "test:///default", "pool", "define", "p1", "--pf", PF, "--vfs", "2"),
], ids=["vfs-create", "vfs-create-dry-run", "define", "pool-define"])
def test_same_count_on_a_pf_refuses_a_vf_the_host_uses(run, make_host, args) -> None:
    root = make_host("server")
    before = tree(root)
    r = run("--sysfs-root", root, *args)
    assert r.exit_code == 4, r.output
    assert f"{USED_VF}: interface enp3s0f0v0 has address 192.0.2.40/24" in r.output
    assert tree(root) == before
    assert driver_of(root, USED_VF) == "igbvf"


def test_same_count_with_force_moves_the_used_vf(run, make_host) -> None:
    root = make_host("server")
    r = run("--sysfs-root", root, "vfs", "create", PF, "2", "--force")
    assert r.exit_code == 0, r.output
    assert driver_of(root, USED_VF) == "vfio-pci"


def test_apply_never_moves_a_used_vf_of_a_pf_defined_elsewhere(run, make_host,
                                                               tmp_path: Path) -> None:
    # defined where nothing used the VF; the host then took it (the address came later)
    quiet = quiet_server(tmp_path / "quiet")
    assert run("--sysfs-root", quiet, "define", PF, "--vfs", "2").exit_code == 0
    root = make_host("server")
    shutil.copytree(cfg(quiet), cfg(root))
    r = run("--sysfs-root", root, "apply")
    assert r.exit_code != 0, r.output
    assert f"{PF}: refusing: {USED_VF}: interface enp3s0f0v0" in r.output
    assert "apply never forces" in r.output
    assert driver_of(root, USED_VF) == "igbvf"


def test_define_alone_refused_when_the_mate_is_detached_by_hand(run, demo_root: Path) -> None:
    # at boot the mate 04:00.1 is on e1000e again: the definition could never be applied
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0
    r = run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci")
    assert r.exit_code == 4, r.output
    assert "0000:04:00.1 (on vfio-pci now, undefined: on its host driver at boot)" in r.output
    assert "--group" in r.output
    assert not (cfg(demo_root) / "devices").exists() or \
        not list((cfg(demo_root) / "devices").iterdir())


def test_define_group_with_the_mate_detached_by_hand_defines_both(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0
    r = run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci", "--group")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (cfg(demo_root) / "devices").iterdir()) == [
        "0000:04:00.0.json", "0000:04:00.1.json"]


def test_define_alone_accepted_when_the_mate_is_defined_onto_pci_stub(run, demo_root) -> None:
    assert run("--sysfs-root", demo_root, "define", "04:00.1", "--driver", "pci-stub").exit_code \
        == 0
    r = run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("nth", [3, 4])  # the 2nd definition's env file, its JSON file
def test_define_group_on_a_full_disk_leaves_no_half_group(run, demo_root: Path, mocker,
                                                          nth: int) -> None:
    assert run("--sysfs-root", demo_root, "define", "05:00.0", "--driver", "vfio-pci") \
        .exit_code == 0
    before = tree(cfg(demo_root))
    real = statefile.write
    calls = []

    def full(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == nth:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(path, *args, **kwargs)
    mocker.patch("pcimgr.plans.statefile.write", side_effect=full)
    r = run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci", "--group")
    assert r.exit_code != 0 and "rolled back" in r.output, r.output
    assert "No space left on device" in r.output
    assert tree(cfg(demo_root)) == before


def test_status_names_a_mate_detached_by_hand_as_not_viable(run, demo_root: Path) -> None:
    # a definition written before the mate's went: at boot 04:00.1 is on e1000e again
    assert run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci",
               "--group").exit_code == 0
    # undefine refuses half a group now; a definition file removed by hand does it still
    assert run("--sysfs-root", demo_root, "undefine", "04:00.1").exit_code == 4
    cfg = demo_root / ".pcimgr-config"
    (cfg / "devices/0000:04:00.1.json").unlink()
    for env in (cfg / "udev").glob("0000:04:00.1_*"):
        env.unlink()
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0
    r = run("--sysfs-root", demo_root, "status")
    assert r.exit_code == 10, r.output
    assert "IOMMU group 5 is not viable: 0000:04:00.1 on vfio-pci now, undefined" in r.output
