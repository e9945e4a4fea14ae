"""Safety rules no test ran before (mutation survivors): each test here fails when the rule
it names is taken out of the code (issue 22)."""

import dataclasses
import json
from pathlib import Path

from pcimgr.core.address import PciAddress
from pcimgr.core.model import Host
from pcimgr.drivers import safety
from pcimgr.host import discovery, usage
from pcimgr.sim import builder, profiles
from pcimgr.sim.machine import SimulatedMachine
from tests.conftest import driver_of, tree

VIRTIO_DISK = "0000:00:05.0"   # server: sda, sda1 on /srv


def server(path: Path, **facts: object) -> Path:
    p = profiles.get("server")
    builder.build(str(path), dataclasses.replace(p, host=dataclasses.replace(p.host, **facts)))
    return path


def test_detach_refuses_a_pci_bridge(run, demo_root: Path) -> None:
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "detach", "00:1c.0")
    assert r.exit_code == 4, r.output
    assert "0000:00:1c.0 is a PCI bridge; pass the endpoints behind it" in r.output
    assert tree(demo_root) == before


def open_disk_host(tmp_path: Path) -> Path:
    """sda held open by a process and neither mounted nor swap: only /proc shows it."""
    mounts = {k: v for k, v in profiles.get("server").host.mounts.items() if k != "sda1"}
    return server(tmp_path / "open", mounts=mounts, open_blocks={"sda": ["qemu-nbd[4242]"]})


def test_a_disk_open_by_a_process_refuses_a_change(run, tmp_path: Path) -> None:
    root = open_disk_host(tmp_path)
    before = tree(root)
    r = run("--sysfs-root", root, "unbind", VIRTIO_DISK)
    assert r.exit_code == 4, r.output
    assert "block device sda" in r.output and "is open by qemu-nbd[4242]" in r.output
    assert tree(root) == before


def test_show_names_the_process_holding_a_disk_open(run, tmp_path: Path) -> None:
    r = run("--sysfs-root", open_disk_host(tmp_path), "show", VIRTIO_DISK)
    assert r.exit_code == 0, r.output
    assert "block device sda (via 0:0:0:0, target0:0:0, host0, virtio1) is open by " \
        "qemu-nbd[4242]" in r.output


def test_list_leaves_open_disks_out(run, tmp_path: Path) -> None:
    # the /proc scan would cost every listing: list shows only what it reads cheaply
    r = run("--sysfs-root", open_disk_host(tmp_path), "list", "--all", "--json")
    assert r.exit_code == 0, r.output
    entry = next(d for d in json.loads(r.output) if d["address"] == VIRTIO_DISK)
    assert entry["host_use"] == []


def test_a_mate_on_pci_stub_leaves_the_group_viable(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "bind", "04:00.1", "pci-stub").exit_code == 0
    r = run("--sysfs-root", demo_root, "detach", "04:00.0")  # no --group needed
    assert r.exit_code == 0, r.output
    assert driver_of(demo_root, "0000:04:00.0") == "vfio-pci"
    assert driver_of(demo_root, "0000:04:00.1") == "pci-stub"


def test_rebind_clears_a_leftover_override_on_the_host_driver(run, demo_root: Path) -> None:
    sysfs = SimulatedMachine(str(demo_root)).sysfs
    sysfs.write_attr("bus/pci/devices/0000:05:00.0/driver_override", "vfio-pci")
    assert driver_of(demo_root, "0000:05:00.0") == "igb"   # still on igb: no reprobe yet
    r = run("--sysfs-root", demo_root, "rebind", "05:00.0")
    assert r.exit_code == 0, r.output
    assert driver_of(demo_root, "0000:05:00.0") == "igb"
    override = demo_root / "bus/pci/devices/0000:05:00.0/driver_override"
    assert override.read_text().strip() == "(null)"


def test_a_looping_block_stack_shows_each_use_once(run, make_host) -> None:
    root = make_host("server")
    (root / "devices/virtual/block/dm-0/slaves/dm-0").symlink_to("../../dm-0")
    r = run("--sysfs-root", root, "show", "01:00.0")
    assert r.exit_code == 0, r.output
    assert r.output.count("is mounted on / (the root filesystem)") == 1, r.output
    assert r.output.count("nvme0n1p1 (via nvme0n1, nvme-subsys0, nvme0) is mounted on "
                          "/boot/efi") == 1


def test_a_looping_interface_stack_is_followed_once(run, make_host) -> None:
    root = make_host("server")
    # br0 below bond0, which is below br0: a hostile tree
    (root / "devices/virtual/net/bond0/lower_br0").symlink_to("../br0")
    r = run("--sysfs-root", root, "show", "02:00.0")
    assert r.exit_code == 0, r.output
    assert r.output.count("has address 192.0.2.30/24") == 1, r.output


def test_a_vf_gone_mid_scan_does_not_break_the_pf_check(make_host) -> None:
    machine = SimulatedMachine(str(make_host("server")))
    host = discovery.scan(machine.sysfs)
    gone = PciAddress.parse("0000:03:10.2")
    host = Host(tuple(d for d in host.devices if d.address != gone), host.iommu_enabled)
    pf = host.require(PciAddress.parse("0000:03:00.0"))
    assert pf.sriov is not None and gone in pf.sriov.vfs
    found = safety.concerns(machine.sysfs, host, [pf], usage.survey(machine))
    assert any("its VF 0000:03:10.0: interface enp3s0f0v0" in c.reason for c in found)


def test_every_disk_of_a_multi_disk_root_is_mounted_on_root(run, tmp_path: Path) -> None:
    p = profiles.get("server").host
    mounts = {k: v for k, v in p.mounts.items() if k != "sda1"}
    root = server(tmp_path / "two", mounts=mounts,
                  block_stacks={"dm-0": ("vg0-root", ["nvme0n1p2", "sda1"])})
    for address in ("01:00.0", VIRTIO_DISK):
        r = run("--sysfs-root", root, "show", address)
        assert r.exit_code == 0, r.output
        assert "is mounted on / (the root filesystem)" in r.output, (address, r.output)


def test_detach_to_pci_stub_needs_no_iommu(run, make_host) -> None:
    root = make_host("demo", iommu=False)
    r = run("--sysfs-root", root, "detach", "04:00.0", "--driver", "pci-stub")
    assert r.exit_code == 0, r.output  # no groups without an IOMMU: no --group either
    assert driver_of(root, "0000:04:00.0") == "pci-stub"


def test_rebind_of_a_driverless_function_says_so(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "rebind", "00:1f.0")
    assert r.exit_code == 0, r.output
    assert "0000:00:1f.0 has no driver, and pcimgr never moved it; nothing to give back" \
        in r.output
    assert "None" not in r.output
