"""Host insight (issue 16): why a group is shared, what a reset would hit, the PCIe tree with
link health, NUMA at assign; the simulated capabilities held to the real kernel's."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pcimgr.core import configspace
from pcimgr.core.address import PciAddress
from pcimgr.core.topology import Link
from pcimgr.host import discovery, topology
from pcimgr.host.sysfs import Sysfs
from pcimgr.sim import builder, profiles
from pcimgr.sim.configspace import Caps
from pcimgr.sim.kernel import SimulatedKernel
from pcimgr.sim.machine import SimulatedMachine
from pcimgr.sim.profiles import NET, DeviceSpec, HostFacts, Profile
from tests.conftest import driver_of, golden
from tests.lab import capabilities

A = PciAddress.parse


def test_simulated_capabilities_are_the_real_kernels(tmp_path: Path) -> None:
    """Reset methods, link files, port types, FLR, PM and ACS of every function of the lab
    guest as Linux reported them (tests/lab/fixtures/capabilities.json), igb with 2 VFs;
    among them Linux's stale "bus" of the first e1000 behind the PCIe-to-PCI bridge."""
    recorded = json.loads(capabilities.FIXTURE.read_text())
    root = tmp_path / "sys"
    builder.build(str(root), profiles.get("lab"))
    SimulatedMachine(str(root)).sysfs.write_attr(
        "bus/pci/devices/0000:01:00.0/sriov_numvfs", "2")
    assert capabilities.record(str(root)) == recorded["functions"]
    assert recorded["functions"]["0000:02:01.0"]["reset_method"] == "bus"
    assert recorded["functions"]["0000:02:02.0"]["reset_method"] is None


def test_configspace_parses_what_unprivileged_users_cannot_read_as_unknown() -> None:
    from pcimgr.sim import configspace as sim
    full = sim.build(0x8086, 0x10C9, NET, 1, 0x8086, 0xA03C, False,
                     caps=Caps("endpoint", (5.0, 4, 2.5, 4), flr=True, pm_soft_reset=False))
    cs = configspace.parse(full)
    assert (cs.port_type, cs.flr, cs.pm_soft_reset, cs.link_max, cs.link_current) == \
        ("endpoint", True, False, (5.0, 4), (2.5, 4))
    header = configspace.parse(full[:64])
    assert not header.complete and header.flr is None and header.acs is None
    assert configspace.parse(b"") == replace(header, complete=False)
    # a capability list that loops on itself ends
    looped = bytearray(full)
    looped[0x41] = 0x40
    assert configspace.parse(bytes(looped)).port_type == "endpoint"


def test_links_parse_as_the_kernel_writes_them() -> None:
    assert Link.parse("8.0 GT/s PCIe", "4") == Link(8.0, 4)
    assert str(Link.parse("2.5 GT/s PCIe", "1")) == "2.5 GT/s x1"
    assert Link.parse("Unknown", "0") is None and Link.parse(None, None) is None
    assert Link.parse("8.0 GT/s PCIe", "255") is None  # an integrated endpoint's max width


def test_tree_shows_the_hierarchy_groups_links_and_a_degraded_link(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "tree")
    assert r.exit_code == 0
    golden("tree_demo.txt", r.stdout)
    assert "1 link(s) trained below what both ends support" in r.stderr
    data = json.loads(run("--sysfs-root", demo_root, "tree", "--json").stdout)
    port = next(n for n in data if n["address"] == "0000:00:1d.0")
    x710 = port["children"][0]
    assert x710["address"] == "0000:06:00.0" and x710["port_type"] == "endpoint"
    assert x710["link"] == {"speed_gts": 8.0, "width": 4}
    assert x710["link_max"] == {"speed_gts": 8.0, "width": 8}
    assert x710["degraded"] == "link at 8 GT/s x4, both ends support 8 GT/s x8"
    assert x710["reset_methods"] == ["flr", "bus"]
    # the 82571EB's port trained at the card's 2.5 GT/s: not degraded
    assert all(n["degraded"] is None for n in data if n["address"] != "0000:00:1d.0")


def test_why_a_group_is_shared(demo_root: Path, make_host) -> None:
    sysfs = Sysfs(str(demo_root))
    host = discovery.scan(sysfs)
    topo = topology.read(sysfs, host)
    why = {n: topo.why_shared([m.address for m in g.members]) for n, g in host.groups.items()}
    assert why[7] == []  # the 82576 alone
    assert why[5][0] == ("0000:04:00.0, 0000:04:00.1 are functions of one multifunction device "
                         "without ACS: they can reach each other")
    assert why[3][0] == ("0000:00:1b.0 (root-port) has no ACS capability: the functions below "
                         "it are not isolated from it or from each other")
    assert "pcie_acs_override" in why[3][-1] and why[3][-2].startswith("way out:")
    # the lab: the e1000 pair behind QEMU's PCIe-to-PCI bridge
    lab = Sysfs(str(make_host("lab", name="lab")))
    lab_host = discovery.scan(lab)
    reasons = topology.read(lab, lab_host).why_shared(
        [m.address for m in lab_host.groups[4].members])
    assert reasons[0].startswith("0000:00:04.0 is a conventional PCI bridge (PCIe-to-PCI)")


def test_why_needs_root_for_acs(demo_root: Path, mocker) -> None:
    """Unprivileged: 64 bytes of configuration space; the answer says so instead of guessing."""
    sysfs = Sysfs(str(demo_root))
    real = Sysfs.read_bytes
    mocker.patch.object(Sysfs, "read_bytes",
                        lambda self, rel, size=4096: (real(self, rel, size) or b"")[:64])
    host = discovery.scan(sysfs)
    reasons = topology.read(sysfs, host).why_shared([A("0000:04:00.0"), A("0000:04:00.1")])
    assert reasons == ["ACS is beyond the first 64 bytes of configuration space, which only "
                       "root may read: run as root to see why"]


def test_reset_collateral(demo_root: Path, make_host) -> None:
    sysfs = Sysfs(str(demo_root))
    gpu = topology.neighbourhood(sysfs, A("0000:01:00.0")).reset(A("0000:01:00.0"))
    assert gpu.methods == ("bus",) and gpu.only_bus
    assert gpu.bus_collateral == (A("0000:01:00.1"),)
    igb = topology.neighbourhood(sysfs, A("0000:05:00.0")).reset(A("0000:05:00.0"))
    assert igb.function_level and igb.methods == ("flr", "pm", "bus")
    lab = Sysfs(str(make_host("lab", name="lab")))
    e1000 = topology.neighbourhood(lab, A("0000:02:01.0")).reset(A("0000:02:01.0"))
    assert e1000.methods == ("bus",) and e1000.bus_collateral == (A("0000:02:02.0"),)


def test_reset_command(run, demo_root: Path) -> None:
    kernel = SimulatedKernel(str(demo_root))
    r = run("--sysfs-root", demo_root, "reset", "05:00.0")
    assert r.exit_code == 4 and "bound to igb" in r.output and r.output.count("\n") == 1
    r = run("--sysfs-root", demo_root, "reset", "00:1f.6")
    assert r.exit_code == 4 and "eno1" in r.output  # the management NIC: host use
    assert run("--sysfs-root", demo_root, "detach", "05:00.0").exit_code == 0
    r = run("--sysfs-root", demo_root, "reset", "05:00.0", "--dry-run")
    assert r.exit_code == 0 and "echo 1 > /sys/bus/pci/devices/0000:05:00.0/reset" in r.output
    assert kernel.resets(A("0000:05:00.0")) == 0
    r = run("--sysfs-root", demo_root, "reset", "05:00.0")
    assert r.exit_code == 0, r.output
    assert SimulatedKernel(str(demo_root)).resets(A("0000:05:00.0")) == 1
    assert driver_of(demo_root, "0000:05:00.0") == "vfio-pci"
    history = run("--sysfs-root", demo_root, "history").output
    assert "pcimgr reset 0000:05:00.0: done" in history
    # a PF with VFs: they would go with it
    r = run("--sysfs-root", demo_root, "reset", "07:00.0")
    assert r.exit_code == 4 and "has 2 VF(s)" in r.output
    # the GPU's audio function: no method at all
    r = run("--sysfs-root", demo_root, "reset", "01:00.1", "--force")
    assert r.exit_code == 4 and "no reset method" in r.output


def test_reset_refused_while_a_guest_holds_the_group(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "detach", "05:00.0").exit_code == 0
    SimulatedKernel(str(demo_root)).hold_vfio(7, "qemu-system-x86[4242]")
    r = run("--sysfs-root", demo_root, "reset", "05:00.0", "--force")
    assert r.exit_code == 4 and "held by qemu-system-x86[4242]" in r.output
    assert SimulatedKernel(str(demo_root)).resets(A("0000:05:00.0")) == 0


def test_stale_bus_reset_warns_of_what_it_hits(run, make_host) -> None:
    """Linux kept "bus" for the lab's first e1000 though its mate is on that bus now: the
    reset would hit the mate too, and pcimgr says so."""
    root = make_host("lab", name="lab")
    assert run("--sysfs-root", root, "detach", "02:01.0", "--group").exit_code == 0
    r = run("--sysfs-root", root, "reset", "02:01.0", "--dry-run")
    assert r.exit_code == 0
    assert "resets 0000:02:01.0 with its bus, which also resets 0000:02:02.0" in r.output


def _nic_without_flr_beside_the_hosts_nic() -> Profile:
    """A dual-port NIC whose functions have ACS (a group each) but no FLR or PM reset; the
    host's address is on port 1. Assigning port 0 means bus resets that hit port 1."""
    caps = Caps("endpoint", (2.5, 4, 2.5, 4), acs=0x1D)
    port = Caps("root-port", (8.0, 4, 2.5, 4), acs=0x5F)
    devices = (
        DeviceSpec("0000:00:1c.0", "8086", "a338", 0x060400, "pcieport", 1, numa_node=1,
                   caps=port),
        DeviceSpec("0000:04:00.0", "8086", "105e", NET, "e1000e", 2, parent="0000:00:1c.0",
                   netdev="enp4s0f0", numa_node=1, caps=caps),
        DeviceSpec("0000:04:00.1", "8086", "105e", NET, "e1000e", 3, parent="0000:00:1c.0",
                   netdev="enp4s0f1", numa_node=1, caps=caps),
        DeviceSpec("0000:00:1f.6", "8086", "15bb", NET, "e1000e", 4, netdev="eno1",
                   numa_node=0),
    )
    return Profile("noflr", "dual-port NIC without FLR beside the host's NIC", devices,
                   ("pcieport", "e1000e", "vfio-pci", "pci-stub"),
                   host=HostFacts(addresses={"enp4s0f1": ["192.0.2.7/24"]}))


def test_assign_refuses_a_bus_reset_that_hits_the_hosts_nic(run, tmp_path: Path) -> None:
    root = tmp_path / "sys"
    builder.build(str(root), _nic_without_flr_beside_the_hosts_nic())
    r = run("--sysfs-root", root, "--connect", "test:///default", "assign", "04:00.0", "test",
            "--dry-run")
    assert r.exit_code == 4 and r.output.count("\n") == 1, r.output
    assert "no function-level reset" in r.output and "0000:04:00.1" in r.output
    assert "192.0.2.7/24" in r.output
    r = run("--sysfs-root", root, "--connect", "test:///default", "assign", "04:00.0", "test",
            "--dry-run", "--force")
    assert r.exit_code == 0, r.output
    assert "resets its bus, and with it 0000:04:00.1" in r.output
    assert driver_of(root, "0000:04:00.0") == "e1000e"  # a dry run


def test_assign_warns_of_a_cross_node_guest(run, tmp_path: Path) -> None:
    """The NIC is on NUMA node 1 (CPUs 8-15); libvirt's test domain is unpinned, then pinned
    to node 0's CPUs."""
    from pcimgr.host import libvirt_adapter
    root = tmp_path / "sys"
    builder.build(str(root), _nic_without_flr_beside_the_hosts_nic())
    args = ("--sysfs-root", root, "--connect", "test:///default", "assign", "04:00.1", "test",
            "--dry-run", "--force")
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert "test's vCPUs are not pinned; 0000:04:00.1 is on NUMA node 1 (CPUs " \
        "8,9,10,11,12,13,14,15)" in r.output
    conn = libvirt_adapter.connect("test:///default")._conn
    pinned = conn.lookupByName("test").XMLDesc(0).replace(
        "<vcpu placement='static'>2</vcpu>",
        "<vcpu placement='static' cpuset='0-3'>2</vcpu>"
        "<numatune><memory mode='strict' nodeset='0'/></numatune>")
    conn.defineXML(pinned.replace("<name>test</name>", "<name>pinned</name>")
                   .replace(conn.lookupByName("test").UUIDString(),
                            "8a7d1b47-7c1a-4f3e-9a1e-5f1f1b9d0c01"))
    r = run(*args[:6], "pinned", "--dry-run", "--force")
    assert r.exit_code == 0, r.output
    assert "pinned's vCPUs run on NUMA node(s) 0 and 0000:04:00.1 is on node 1" in r.output
    assert "pinned's memory is bound to NUMA node(s) 0" in r.output


@pytest.mark.parametrize("text,cpus", [("0-3,8", {0, 1, 2, 3, 8}), ("0-7,^2", {0, 1, 3, 4, 5,
                                                                                 6, 7}),
                                       ("", set()), ("x,1", {1})])
def test_cpu_lists(text: str, cpus: set[int]) -> None:
    from pcimgr.guests import numa
    assert numa.cpu_list(text) == cpus
