"""assign/release with a real libvirtd and real VFIO, inside the QEMU lab guest (issue 6).

The guest runs libvirtd (from the host's root, with a guest-local qemu.conf)
and small L2 domains: TCG, q35, no OS, spare pcie-root-ports for hot-plug.
"""

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli.app import cli
from tests import libvirtd
from tests.lab.test_lab_kernel import E1000E, by_hand_back, driver
from tests.test_assign import hostdevs

pytestmark = pytest.mark.lab

PF = "0000:01:00.0"
VF = "0000:01:10.2"
# what LAB-FACTS found necessary in this guest: no privilege separation, namespaces
# or cgroups (none of them is set up by the tiny init)
QEMU_CONF = ('user = "root"\ngroup = "root"\nsecurity_driver = "none"\nnamespaces = []\n'
             'cgroup_controllers = []\n')


def pcimgr(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def guest_libvirtd() -> Iterator[None]:
    Path("/etc/libvirt/qemu.conf").write_text(QEMU_CONF)  # the guest's overlay, not the host
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    started = libvirtd.start()
    yield
    libvirtd.stop(started)


@pytest.fixture
def domains(guest_libvirtd: None) -> Iterator[list[str]]:
    made: list[str] = []

    def make(name: str, running: bool) -> str:
        made.append(name)
        libvirtd.define(name, running)
        return name
    yield make  # type: ignore[misc]
    for name in made:
        libvirtd.virsh("destroy", name)
        libvirtd.virsh("undefine", name)
    (Path("/sys/bus/pci/devices") / PF / "sriov_numvfs").write_text("0")
    subprocess.run(["ip", "link", "set", "enp1s0", "down"], check=True)
    for address in E1000E:
        if driver(address) != "e1000e":
            by_hand_back(address)


def qemu_holds(vm: str, address: str) -> bool:
    """The domain's QEMU process has the function's /dev/vfio group open."""
    group = os.path.basename(os.readlink(f"/sys/bus/pci/devices/{address}/iommu_group"))
    pid = int(Path(f"/run/libvirt/qemu/{vm}.pid").read_text())
    fds = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fd) == f"/dev/vfio/{group}" for fd in fds.iterdir())


def test_vf_with_mac_assigned_to_the_config_then_started(domains) -> None:
    vm, other = domains("vm1", False), domains("vm2", False)
    assert pcimgr("vfs", "create", PF, "2", "--driver", "host").exit_code == 0
    assert driver(VF) == "igbvf"
    r = pcimgr("assign", VF, vm, "--config", "--mac", "52:54:00:5e:00:02")
    assert r.exit_code == 0, r.output
    # libvirt refuses to start the guest while the PF is down ("the PF is not online")
    assert "enp1s0, the PF, is down" in r.output
    subprocess.run(["ip", "link", "set", "enp1s0", "up"], check=True)
    assert driver(VF) == "vfio-pci"
    devices = hostdevs(vm)
    assert [(d["element"], d["mac"]) for d in devices] == [("interface", "52:54:00:5e:00:02")]
    r = pcimgr("assign", VF, other, "--config")
    assert r.exit_code == 4 and f"already assigned to {vm}" in r.output

    assert libvirtd.virsh("start", vm).returncode == 0
    assert qemu_holds(vm, VF)
    listing = {d["address"]: d for d in json.loads(pcimgr("list", "--json").output)}
    assert listing[VF]["holders"] == [vm]
    vf = json.loads(pcimgr("vfs", "list", PF, "--json").output)[0]["vfs"][1]
    assert vf["mac"] == "52:54:00:5e:00:02"  # libvirt set it through the PF at start
    assert any(who.startswith("qemu") for who in vf["open_by"]), vf

    assert libvirtd.virsh("destroy", vm).returncode == 0
    r = pcimgr("release", VF)
    assert r.exit_code == 0, r.output
    assert hostdevs(vm) == []
    assert driver(VF) == "igbvf"


def test_group_hot_plugged_live_and_released_after_the_guest_stops(domains) -> None:
    vm = domains("vm3", True)
    r = pcimgr("assign", E1000E[0], vm, "--live", "--group")
    assert r.exit_code == 0, r.output
    assert [driver(a) for a in E1000E] == ["vfio-pci", "vfio-pci"]
    assert len(hostdevs(vm, inactive=False)) == 1 and qemu_holds(vm, E1000E[0])

    # no OS in the guest: nothing acknowledges the unplug; release gives up cleanly (a
    # hang would be caught by the lab's own timeout)
    r = pcimgr("release", E1000E[0], "--timeout", "5")
    assert r.exit_code == 7, r.output
    assert "has not released 0000:03:00.0 5 s after the unplug request" in r.output
    assert "virsh destroy" in r.output
    assert [driver(a) for a in E1000E] == ["vfio-pci", "vfio-pci"]

    assert libvirtd.virsh("destroy", vm).returncode == 0
    r = pcimgr("release", E1000E[0])
    assert r.exit_code == 0, r.output
    assert hostdevs(vm) == []
    assert [driver(a) for a in E1000E] == ["e1000e", "e1000e"]


def test_unknown_domain_detaches_nothing(guest_libvirtd: None) -> None:
    r = pcimgr("assign", E1000E[0], "no-such-vm", "--group")
    assert r.exit_code == 3 and "no domain 'no-such-vm'" in r.output
    assert [driver(a) for a in E1000E] == ["e1000e", "e1000e"]
