"""SR-IOV pools on the real igb with a real libvirtd and real VFIO, in the QEMU lab guest
(issue 17): two guests started from one pool get different VFs (their QEMUs hold the VFs'
/dev/vfio groups), and a failover pair starts with QEMU's failover options."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli.app import cli
from tests import libvirtd
from tests.lab.test_lab_assign import PF, domains, guest_libvirtd, qemu_holds  # noqa: F401

pytestmark = pytest.mark.lab

POOL = "labpool"


def pcimgr(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def pool(domains) -> str:  # noqa: F811 - the imported fixture
    # libvirt sets a VF's MAC through the PF as the guest starts: the PF must be up
    subprocess.run(["ip", "link", "set", "enp1s0", "up"], check=True)
    r = pcimgr("pool", "define", POOL, "--pf", PF, "--vfs", "2")
    assert r.exit_code == 0, r.output
    yield POOL
    for vm in ("pool-a", "pool-b", "pool-c", "failover"):  # guests first: they hold ports
        libvirtd.virsh("destroy", vm)
    libvirtd.virsh("net-destroy", POOL)
    libvirtd.virsh("net-undefine", POOL)


def test_two_guests_from_one_pool_get_different_vfs(domains, pool: str) -> None:  # noqa: F811
    vms = [domains("pool-a", False), domains("pool-b", False)]
    for i, vm in enumerate(vms):
        r = pcimgr("assign", "--pool", pool, vm, "--mac", f"52:54:00:1a:00:0{i}")
        assert r.exit_code == 0, r.output
    for vm in vms:
        r = libvirtd.virsh("start", vm)
        assert r.returncode == 0, r.stderr
    view = json.loads(pcimgr("pool", "list", "--json").output)[0]
    holders = {vf["address"]: vf["holder"] for vf in view["vfs"]}
    assert sorted(holders.values()) == sorted(vms), view
    assert view["free"] == 0
    for vf, vm in holders.items():
        assert qemu_holds(vm, vf)
    # a third guest is told before it starts
    third = domains("pool-c", False)
    r = pcimgr("assign", "--pool", pool, third)
    assert r.exit_code == 4 and "0 free VFs" in r.output


def test_a_failover_pair_starts_with_qemus_failover_options(domains, pool: str,  # noqa: F811
                                                            tmp_path) -> None:
    # the virtio member is a tap on the network's bridge: the guest loads nothing by itself
    subprocess.run(["modprobe", "tun"], check=True)
    net = tmp_path / "net.xml"
    net.write_text("<network><name>lab-virtio</name><bridge name='virbr-lab'/></network>")
    assert libvirtd.virsh("net-define", str(net)).returncode == 0
    assert libvirtd.virsh("net-start", "lab-virtio").returncode == 0
    try:
        vm = domains("failover", False)
        r = pcimgr("assign", "--pool", pool, vm, "--failover", "--network", "lab-virtio",
                   "--mac", "52:54:00:1a:fa:01")
        assert r.exit_code == 0, r.output
        r = libvirtd.virsh("start", vm)
        assert r.returncode == 0, r.stderr
        pid = Path(f"/run/libvirt/qemu/{vm}.pid").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        # libvirt 9 gives QEMU its devices as JSON: "failover":true on the virtio member,
        # "failover_pair_id" naming it on the VF
        assert re.search(r'"failover":\s*true|failover=on', cmdline), cmdline[-3000:]
        assert re.search(r'"failover_pair_id":\s*"ua-pcimgr-5254001afa01"|'
                         r"failover_pair_id=ua-pcimgr-5254001afa01", cmdline), cmdline[-3000:]
        view = json.loads(pcimgr("pool", "list", "--json").output)[0]
        assert vm in {vf["holder"] for vf in view["vfs"]}
    finally:
        libvirtd.virsh("destroy", "failover")
        libvirtd.virsh("net-destroy", "lab-virtio")
        libvirtd.virsh("net-undefine", "lab-virtio")
