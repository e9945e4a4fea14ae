"""SR-IOV pools and failover pairs (issue 17) against a real libvirtd (qemu:///system), on a
simulated host's igb: the network libvirt defines, starts and autostarts; interfaces it
accepts and reads back; exhaustion; teaming XML it validates; the way back; bad input
leaving no libvirt object behind. Live unplug of a VF is the lab's (tests/lab)."""

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests import libvirtd
from tests.conftest import driver_of

PF = "0000:05:00.0"
VFS = ["0000:05:10.0", "0000:05:10.2"]


def pcimgr(run, root: Path, uri: str, *args: str):
    return run("--sysfs-root", root, "--connect", uri, *args)


def interfaces(domain: str) -> list[ET.Element]:
    r = libvirtd.virsh("dumpxml", "--inactive", domain)
    assert r.returncode == 0, r.stderr
    return ET.fromstring(r.stdout).findall("./devices/interface")


@pytest.fixture
def pool(run, demo_root: Path, libvirt_uri: str):
    """Pool `pcimgr-gold` of 2 VFs of the demo's 82576 on vfio-pci, VLAN 100."""
    name = "pcimgr-gold"
    r = pcimgr(run, demo_root, libvirt_uri, "pool", "define", name, "--pf", "05:00.0",
               "--vfs", "2", "--vlan", "100", "--trust", "on")
    assert r.exit_code == 0, r.output
    yield name
    libvirtd.virsh("net-destroy", name)
    libvirtd.virsh("net-undefine", name)


def test_pool_define_makes_vfs_a_definition_and_an_autostarted_network(
        run, demo_root: Path, libvirt_uri: str, pool: str) -> None:
    assert [driver_of(demo_root, vf) for vf in VFS] == ["vfio-pci", "vfio-pci"]
    net = libvirtd.virsh("net-dumpxml", pool)
    assert net.returncode == 0, net.stderr
    root = ET.fromstring(net.stdout)
    assert root.find("./forward").get("mode") == "hostdev"
    assert root.find("./forward/pf").get("dev") == "enp5s0f0"  # libvirt finds the VFs
    assert root.find("./vlan/tag").get("id") == "100"
    info = libvirtd.virsh("net-info", pool).stdout
    # libvirt starts a hostdev network only when its addresses are SR-IOV VFs of its own
    # host: a simulated host's are not (the lab starts one on the real igb)
    assert "Active:         no" in info and "Autostart:      yes" in info
    definition = json.loads((demo_root / ".pcimgr-config/devices/0000:05:00.0.json").read_text())
    assert definition["vfs"] == 2 and definition["vf_driver"] == "vfio-pci"
    assert definition["vf"]["1"] == {"trust": True}
    listing = json.loads(pcimgr(run, demo_root, libvirt_uri, "pool", "list", "--json").output)
    assert listing == [{"name": pool, "pf": PF, "vf_driver": "vfio-pci", "vlan": 100,
                        "trust": True, "spoofchk": None, "uri": libvirt_uri,
                        "network": {"defined": True, "active": False, "autostart": True},
                        "vfs": [{"address": vf, "holder": None} for vf in VFS],
                        "guests": [], "free": 2}]
    # the same definition again: nothing to do
    r = pcimgr(run, demo_root, libvirt_uri, "pool", "define", pool, "--pf", "05:00.0",
               "--vfs", "2", "--vlan", "100", "--trust", "on")
    assert r.exit_code == 0 and "already has 2 VF(s)" in r.output, r.output


def test_guests_take_vfs_until_the_pool_is_exhausted(run, demo_root: Path, libvirt_uri: str,
                                                     pool: str, make_domain) -> None:
    vms = [make_domain(f"pool{i}") for i in range(3)]
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "--pool", pool, vms[0], "--mac",
               "52:54:00:aa:00:01")
    assert r.exit_code == 0, r.output
    (iface,) = interfaces(vms[0])
    assert iface.get("type") == "network" and iface.find("./source").get("network") == pool
    assert iface.find("./mac").get("address") == "52:54:00:aa:00:01"
    assert pcimgr(run, demo_root, libvirt_uri, "assign", "--pool", pool, vms[1]).exit_code == 0
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "--pool", pool, vms[2])
    assert r.exit_code == 4 and r.output.count("\n") == 1
    assert f"pool {pool} has 0 free VFs: 2 held by {vms[0]}, {vms[1]}" in r.output
    assert interfaces(vms[2]) == []
    view = json.loads(pcimgr(run, demo_root, libvirt_uri, "pool", "list", "--json").output)[0]
    assert view["free"] == 0 and view["guests"] == sorted(vms[:2])
    # the pool cannot go while guests use it; released, it can
    r = pcimgr(run, demo_root, libvirt_uri, "pool", "undefine", pool)
    assert r.exit_code == 4 and "still take VFs" in r.output
    for vm in vms[:2]:
        r = pcimgr(run, demo_root, libvirt_uri, "release", "--pool", pool, vm)
        assert r.exit_code == 0, r.output
        assert interfaces(vm) == []
    r = pcimgr(run, demo_root, libvirt_uri, "pool", "undefine", pool)
    assert r.exit_code == 0, r.output
    assert libvirtd.virsh("net-info", pool).returncode != 0
    assert not (demo_root / ".pcimgr-config/pools" / f"{pool}.json").exists()
    assert not (demo_root / ".pcimgr-config/devices/0000:05:00.0.json").exists()
    assert driver_of(demo_root, VFS[0]) == "vfio-pci"  # the VFs stay


def test_a_failover_pair_is_accepted_by_libvirt_and_released_whole(
        run, demo_root: Path, libvirt_uri: str, pool: str, make_domain, tmp_path) -> None:
    """virtio on a libvirt network teamed with a VF of the pool (libvirt checks the teaming
    and the alias it names); release takes both out."""
    net = tmp_path / "net.xml"
    net.write_text("<network><name>pcimgr-virtio</name></network>")
    assert libvirtd.virsh("net-define", str(net)).returncode == 0
    try:
        vm = make_domain("failover")
        r = pcimgr(run, demo_root, libvirt_uri, "assign", "--pool", pool, vm, "--failover",
                   "--network", "pcimgr-virtio", "--mac", "52:54:00:fa:11:01")
        assert r.exit_code == 0, r.output
        virtio, vf = interfaces(vm)
        assert virtio.find("./source").get("network") == "pcimgr-virtio"
        assert virtio.find("./model").get("type") == "virtio"
        assert virtio.find("./teaming").get("type") == "persistent"
        alias = virtio.find("./alias").get("name")
        assert alias == "ua-pcimgr-525400fa1101"
        assert vf.find("./source").get("network") == pool
        assert vf.find("./teaming").attrib == {"type": "transient", "persistent": alias}
        assert {e.find("./mac").get("address") for e in (virtio, vf)} == {"52:54:00:fa:11:01"}
        # not running: nothing to unplug before a migration
        r = pcimgr(run, demo_root, libvirt_uri, "migrate-prep", vm)
        assert r.exit_code == 2 and "not running" in r.output
        r = pcimgr(run, demo_root, libvirt_uri, "migrate-finish", vm)
        assert r.exit_code == 2 and "not running here" in r.output and r.output.count("\n") == 1
        r = pcimgr(run, demo_root, libvirt_uri, "release", "--pool", pool, vm)
        assert r.exit_code == 0, r.output
        assert interfaces(vm) == []
    finally:
        libvirtd.virsh("net-undefine", "pcimgr-virtio")


@pytest.fixture
def server_root(make_host) -> Path:
    return make_host("server", name="server")


def test_bad_input_leaves_nothing_behind(run, demo_root: Path, libvirt_uri: str,
                                         make_domain) -> None:
    vm = make_domain("badpool")
    cases = [
        (("pool", "define", "pcimgr-bad", "--pf", "00:1f.6"), 2, "no SR-IOV capability"),
        (("pool", "define", "pcimgr-bad", "--pf", "05:00.0", "--vlan", "4095"), 2, "4095"),
        (("pool", "define", "bad/name", "--pf", "05:00.0"), 2, "not a pool name"),
        (("assign", "--pool", "nosuch", vm), 3, "no pool 'nosuch'"),
    ]
    for args, code, text in cases:
        r = pcimgr(run, demo_root, libvirt_uri, *args)
        assert r.exit_code == code and text in r.output and r.output.count("\n") == 1, r.output
    assert libvirtd.virsh("net-info", "pcimgr-bad").returncode != 0
    # a bridge that does not exist: refused before libvirt is asked to change anything
    r = pcimgr(run, demo_root, libvirt_uri, "pool", "define", "pcimgr-br", "--pf", "05:00.0",
               "--vfs", "1")
    assert r.exit_code == 0, r.output
    try:
        r = pcimgr(run, demo_root, libvirt_uri, "assign", "--pool", "pcimgr-br", vm,
                   "--failover", "--bridge", "nobr0")
        assert r.exit_code == 2 and "no bridge nobr0" in r.output and r.output.count("\n") == 1
        assert interfaces(vm) == []
    finally:
        libvirtd.virsh("net-destroy", "pcimgr-br")
        libvirtd.virsh("net-undefine", "pcimgr-br")


def test_a_pool_on_a_pf_the_host_uses_is_refused(run, server_root: Path,
                                                 libvirt_uri: str) -> None:
    """The server's 82576 carries a VF the host uses (enp3s0f0v0 has an address)."""
    r = pcimgr(run, server_root, libvirt_uri, "pool", "define", "pcimgr-host", "--pf",
               "03:00.0", "--vfs", "4")
    assert r.exit_code == 4 and r.output.count("\n") == 1, r.output
    assert libvirtd.virsh("net-info", "pcimgr-host").returncode != 0
    assert not (server_root / ".pcimgr-config/pools/pcimgr-host.json").exists()


def test_a_connection_the_daemon_closed_is_opened_again() -> None:
    """A long run (the lab's, an Ansible module's) may outlive a libvirtd restart."""
    from pcimgr.host import libvirt_adapter
    first = libvirt_adapter.connect("test:///default")
    assert first.alive()
    first._conn.close()
    again = libvirt_adapter.connect("test:///default")
    assert again is not first and again.alive() and again.version()


def test_the_dry_run_shows_the_mac_the_run_uses(run, demo_root: Path, libvirt_uri: str,
                                                 pool: str, make_domain) -> None:
    """Without --mac the pair's MAC is derived from the domain and the pool, not drawn at
    random: `--dry-run` shows the one the run then writes (issue 24)."""
    vm = make_domain("macs")
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "--pool", pool, vm, "--dry-run")
    assert r.exit_code == 0, r.output
    shown = set(re.findall(r"52:54:00(?::[0-9a-f]{2}){3}", r.output))
    assert len(shown) == 1, r.output
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "--pool", pool, vm)
    assert r.exit_code == 0, r.output
    (vf,) = interfaces(vm)
    assert {vf.find("./mac").get("address")} == shown
    assert pcimgr(run, demo_root, libvirt_uri, "release", "--pool", pool, vm).exit_code == 0
