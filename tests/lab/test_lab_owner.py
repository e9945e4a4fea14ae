"""`detach --owner` on the real kernel (issue 23), inside the QEMU lab guest: a process that
is not root opens the VF's /dev/vfio/<group> after `--owner`, and not after a plain detach
(the kernel makes the node root's, 0600, anew with every bind)."""

import grp
import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import test_lab_variant
from tests.lab.test_lab_kernel import driver
from tests.lab.test_lab_persist import pcimgr
from tests.lab.test_lab_variant import MODULE

pytestmark = pytest.mark.lab

variant = test_lab_variant.variant  # the modules tree with the test variant, for one test

PF = "0000:01:00.0"
VF = "0000:01:10.2"
# open(2) as another user, as DPDK or a rootless QEMU opens the group: "opened" or the errno
OPEN = ("import errno, os, sys\n"
        "try:\n    os.close(os.open(sys.argv[1], os.O_RDWR))\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno]); sys.exit(1)\n"
        "print('opened')\n")


def open_as(user: str, group: str, node: str) -> str:
    r = subprocess.run(["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups",
                        "python3", "-c", OPEN, node], capture_output=True, text=True)
    assert r.returncode in (0, 1) and not r.stderr, r.stderr
    return r.stdout.strip()


def node_of(address: str) -> str:
    group = os.path.basename(os.readlink(f"/sys/bus/pci/devices/{address}/iommu_group"))
    return f"/dev/vfio/{group}"


def owner(node: str) -> tuple[int, int, int]:
    info = os.stat(node)
    assert stat.S_ISCHR(info.st_mode)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


@pytest.fixture
def vf() -> Iterator[str]:
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    r = pcimgr("vfs", "create", PF, "2", "--driver", "host")
    assert r.exit_code == 0, r.output
    assert driver(VF) == "igbvf"
    yield VF
    Path(f"/sys/bus/pci/devices/{PF}/sriov_numvfs").write_text("0")


def test_owner_opens_the_group_node_a_plain_detach_does_not_give(vf: str) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    r = pcimgr("detach", vf, "--driver", "vfio-pci", "--owner", "nobody")
    assert r.exit_code == 0, r.output
    assert f"{vf}: its VFIO device nodes to nobody" in r.output
    node = node_of(vf)
    assert driver(vf) == "vfio-pci"
    assert owner(node) == (nobody, 0, 0o600)
    # udev has seen the group's add event by now and left the node as pcimgr made it
    subprocess.run(["udevadm", "settle"], check=True)
    assert owner(node) == (nobody, 0, 0o600)
    assert open_as("nobody", "nogroup", node) == "opened"

    r = pcimgr("rebind", vf)
    assert r.exit_code == 0 and driver(vf) == "igbvf", r.output
    assert not os.path.exists(node)  # the node goes with the driver, its owner with it

    r = pcimgr("detach", vf, "--driver", "vfio-pci")
    assert r.exit_code == 0, r.output
    assert "VFIO device nodes" not in r.output
    assert owner(node) == (0, 0, 0o600)
    assert open_as("nobody", "nogroup", node) == "EACCES"
    assert open_as("root", "root", node) == "opened"

    r = pcimgr("rebind", vf)
    assert r.exit_code == 0 and driver(vf) == "igbvf", r.output


def test_owner_and_group_of_a_vf_on_the_variant(variant: None, vf: str) -> None:
    """USER:GROUP gives the node mode 0660: a member of the group that is not the user opens
    it too; on the VFIO variant driver as on vfio-pci."""
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    r = pcimgr("detach", vf, "--owner", "nobody:nogroup")
    assert r.exit_code == 0, r.output
    assert driver(vf) == MODULE
    node = node_of(vf)
    assert owner(node) == (nobody, nogroup, 0o660)
    assert open_as("daemon", "nogroup", node) == "opened"
    assert open_as("daemon", "daemon", node) == "EACCES"

    r = pcimgr("rebind", vf)
    assert r.exit_code == 0 and driver(vf) == "igbvf", r.output
    assert not os.path.exists(node)
