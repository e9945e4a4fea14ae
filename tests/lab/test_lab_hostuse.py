"""The host-dependency survey on a real kernel (issue 11): a virtio NIC with the default
route, a USB NIC behind xHCI, NVMe under native multipath with a mount, swap and a dm
device, a SCSI disk mounted and held open, a bond; each change command refused with
the chain named, driver, routes and mounts intact; the boot path (udev -> apply) leaves
a function the host has come to use on its driver."""

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.test_lab_kernel import E1000, E1000E, driver
from tests.lab.test_lab_persist import eventually, pcimgr

pytestmark = pytest.mark.lab

DEVICES = Path("/sys/bus/pci/devices")
VIRTIO, XHCI, NVME, SCSI, HOST_BRIDGE = (
    "0000:00:06.0", "0000:00:07.0", "0000:00:08.0", "0000:00:09.0", "0000:00:00.0")


def sh(*commands: str) -> None:
    for command in commands:
        subprocess.run(command, shell=True, check=True)


def quiet(*commands: str) -> None:
    for command in commands:
        subprocess.run(command, shell=True, capture_output=True)


def interface(address: str) -> str:
    """The interface below a function at any depth (virtio2/net/X, usb1/.../net/X)."""
    found = [name for top, dirs, _ in os.walk((DEVICES / address).resolve())  # links not followed
             if os.path.basename(top) == "net" for name in dirs]
    assert len(found) == 1, found
    return found[0]


def refused(args: list[str], *reasons: str) -> str:
    r = pcimgr(*args)
    assert r.exit_code == 4, r.output
    for reason in reasons:
        assert reason in r.output, r.output
    return r.output


@pytest.fixture
def virtio_route() -> Iterator[str]:
    name = interface(VIRTIO)
    sh(f"ip link set {name} up", f"ip addr add 192.0.2.6/24 dev {name}",
       f"ip route add default via 192.0.2.1 dev {name}")
    yield name
    quiet("ip route del default", f"ip addr flush dev {name}", f"ip link set {name} down")


def test_virtio_nic_with_the_default_route(virtio_route: str) -> None:
    chain = f"interface {virtio_route} (via virtio2) carries the default route"
    for args in (["unbind", VIRTIO], ["detach", VIRTIO], ["bind", VIRTIO, "vfio-pci"],
                 ["define", VIRTIO, "--driver", "vfio-pci"]):
        refused(args, chain)
    assert driver(VIRTIO) == "virtio-pci"
    routes = json.loads(subprocess.run(["ip", "-j", "route", "show", "default"],
                                       capture_output=True, text=True).stdout)
    assert [r["dev"] for r in routes] == [virtio_route]
    shown = json.loads(pcimgr("show", VIRTIO, "--json").output)
    assert shown["netdevs"] == [virtio_route]
    assert f"{virtio_route}: default route" in shown["host_use"]
    assert pcimgr("status").exit_code == 0  # nothing defined: a refused define wrote nothing


def test_usb_nic_behind_xhci() -> None:
    name = interface(XHCI)
    sh(f"ip link set {name} up", f"ip addr add 198.51.100.7/24 dev {name}")
    try:
        out = refused(["unbind", XHCI], f"interface {name} (via ", "usb1) has address "
                                                                   "198.51.100.7/24")
        assert "1-1" in out
        assert driver(XHCI) == "xhci_hcd" and interface(XHCI) == name
    finally:
        quiet(f"ip addr flush dev {name}", f"ip link set {name} down")


@pytest.fixture
def nvme_in_use() -> Iterator[None]:
    sh("mkfs.ext4 -q -F /dev/nvme0n1p1", "mkdir -p /mnt/pcimgr-nvme",
       "mount /dev/nvme0n1p1 /mnt/pcimgr-nvme", "mkswap -q /dev/nvme0n1p2 >/dev/null",
       "swapon /dev/nvme0n1p2", "modprobe dm-mod",
       "dmsetup create pcimgr-lv --table '0 63488 linear /dev/nvme0n1p3 0'")
    yield
    quiet("umount /mnt/pcimgr-nvme", "swapoff /dev/nvme0n1p2", "dmsetup remove pcimgr-lv")


def test_nvme_namespace_under_native_multipath(nvme_in_use: None) -> None:
    via = "(via nvme0n1, nvme-subsys0, nvme0)"
    refused(["detach", NVME], f"block device nvme0n1p1 {via} is mounted on /mnt/pcimgr-nvme",
            f"block device nvme0n1p2 {via} is used as swap",
            f"block device nvme0n1p3 {via} is held by dm-0 (pcimgr-lv)")
    refused(["unbind", NVME], "nvme0n1p1")
    assert driver(NVME) == "nvme"
    assert "/mnt/pcimgr-nvme" in Path("/proc/mounts").read_text()
    uses = json.loads(pcimgr("show", NVME, "--json").output)["host_use"]
    assert "nvme0n1p1: mounted on /mnt/pcimgr-nvme" in uses and "nvme0n1p2: swap" in uses


def scsi_chain(disk: str) -> list[str]:
    """The devices between the controller's function and the disk, nearest the disk first
    (0:0:0:0, target0:0:0, hostN, virtioM), as sysfs has them: the SCSI host number is the
    kernel's to give (the first one registered, not always 0)."""
    real = os.path.realpath(f"/sys/class/block/{disk}")  # .../<function>/.../<device>/block/sda
    below = os.path.relpath(os.path.dirname(os.path.dirname(real)),
                            os.path.realpath(DEVICES / SCSI))
    chain = below.split("/")[::-1]
    assert len(chain) == 4 and re.fullmatch(r"host\d+", chain[2]), chain
    return chain


def test_scsi_disk_mounted_and_held_open() -> None:
    sh("mkfs.ext4 -q -F /dev/sda1", "mkdir -p /mnt/pcimgr-scsi", "mount /dev/sda1 /mnt/pcimgr-scsi")
    with open("/dev/sda") as disk:
        holder = subprocess.Popen(["sleep", "300"], stdin=disk)
    try:
        via = ", ".join(scsi_chain("sda"))
        refused(["unbind", SCSI], f"block device sda1 (via sda, {via}) is mounted on "
                                  "/mnt/pcimgr-scsi",
                f"block device sda (via {via}) is open by sleep[{holder.pid}]")
        assert driver(SCSI) == "virtio-pci"
    finally:
        holder.kill()
        holder.wait()
        quiet("umount /mnt/pcimgr-scsi")


def test_bonded_nic() -> None:
    port = interface(E1000E[0])
    sh("modprobe bonding", "ip link add pcimgr-bond type bond", f"ip link set {port} down",
       f"ip link set {port} master pcimgr-bond", "ip addr add 203.0.113.9/24 dev pcimgr-bond")
    try:
        refused(["detach", E1000E[0], "--group"],
                f"interface pcimgr-bond (via {port}) has address 203.0.113.9/24",
                f"interface {port} is enslaved to pcimgr-bond")
        assert [driver(a) for a in E1000E] == ["e1000e", "e1000e"]
    finally:
        quiet("ip link del pcimgr-bond")


def test_driverless_chipset_function_refused_even_forced() -> None:
    for args in (["bind", HOST_BRIDGE, "vfio-pci"], ["bind", HOST_BRIDGE, "vfio-pci", "--force"]):
        refused(args, "chipset's host bridge", "not even with --force")
    assert driver(HOST_BRIDGE) is None
    assert (DEVICES / HOST_BRIDGE / "driver_override").read_text().strip() == "(null)"


@pytest.mark.usefixtures("rules")
def test_boot_path_leaves_a_function_the_host_uses() -> None:
    """Defined while free; the host takes it into use; an add event must not take it away.
    Once free again, the same event moves the pair: the rule is live, the check held it."""
    r = pcimgr("define", E1000[0], "--driver", "vfio-pci", "--group")
    assert r.exit_code == 0, r.output
    name = interface(E1000[0])
    sh(f"ip link set {name} up", f"ip addr add 192.0.2.44/24 dev {name}")
    try:
        sh(f"udevadm trigger --action=add {DEVICES / E1000[0]}", "udevadm settle --timeout=120")
        assert [driver(a) for a in E1000] == ["e1000", "e1000"]
        assert (DEVICES / E1000[0] / "driver_override").read_text().strip() == "(null)"
        r = pcimgr("status")
        assert r.exit_code == 10 and "the host uses it" in r.output, r.output
        r = pcimgr("apply")
        assert r.exit_code == 10 and f"{name} has address 192.0.2.44/24" in r.output
        assert [driver(a) for a in E1000] == ["e1000", "e1000"]
    finally:
        quiet(f"ip addr flush dev {name}", f"ip link set {name} down")
    sh(f"udevadm trigger --action=add {DEVICES / E1000[0]}")
    assert eventually(lambda: [driver(a) for a in E1000] == ["vfio-pci", "vfio-pci"]), \
        [driver(a) for a in E1000]
    group = os.path.basename(os.readlink(DEVICES / E1000[0] / "iommu_group"))
    assert os.path.exists(f"/dev/vfio/{group}")


def test_vf_the_host_uses_keeps_its_pf_and_count() -> None:
    """A VF on igbvf with an address: vfs destroy/recreate and unbinding the PF are refused."""
    pf = "0000:01:00.0"
    r = pcimgr("vfs", "create", pf, "1", "--driver", "host")
    assert r.exit_code == 0, r.output
    vf = os.path.basename(os.readlink(DEVICES / pf / "virtfn0"))
    try:
        assert eventually(lambda: driver(vf) == "igbvf", 30)
        assert eventually(lambda: bool(_names(vf)), 30)
        name = interface(vf)
        sh(f"ip link set {name} up", f"ip addr add 192.0.2.61/24 dev {name}")
        used = f"{vf}: interface {name} has address 192.0.2.61/24"
        refused(["vfs", "destroy", pf], used)
        refused(["vfs", "create", pf, "2"], used)
        refused(["unbind", pf], f"its VF {used}")
        assert (DEVICES / pf / "sriov_numvfs").read_text().strip() == "1"
        assert driver(pf) == "igb" and driver(vf) == "igbvf"
    finally:
        (DEVICES / pf / "sriov_numvfs").write_text("0")


def _names(address: str) -> list[str]:
    net = DEVICES / address / "net"
    return os.listdir(net) if net.is_dir() else []
