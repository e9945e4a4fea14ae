"""VFIO variant drivers on the real kernel (issue 23), inside the QEMU lab guest: `detach`
binds the most specific `vfio_pci:` alias of modules.alias (pcimgr_test_vfio_pci, built by
tests/lab/variant.py for the igb VF 8086:10ca); what the guest's libvirt 9.0 does with a VF
on it; and a definition survives its VF's IOMMU group changing number."""

import json
import os
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli.app import cli
from pcimgr.host.sysfs import Sysfs
from tests import libvirtd
from tests.lab import conformance, test_lab_assign
from tests.lab.test_lab_assign import qemu_holds
from tests.lab.test_lab_kernel import by_hand_back, driver
from tests.lab.test_lab_persist import eventually
from tests.test_assign import hostdevs

pytestmark = pytest.mark.lab

PF = "0000:01:00.0"
PF_DIR = Path("/sys/bus/pci/devices") / PF
VFS = ("0000:01:10.0", "0000:01:10.2")
E1000 = ("0000:02:01.0", "0000:02:02.0")
SCSI = "0000:00:09.0"  # virtio-scsi, a group of its own below the VFs' numbers
MODULE = "pcimgr_test_vfio_pci"
ALIAS = f"alias vfio_pci:v00008086d000010CAsv*sd*bc*sc*i* {MODULE}"
MODULES = Path("/lib/modules") / os.uname().release
CONFIG = Path("/etc/pcimgr/devices")
UNSIGNED, OUT_OF_TREE = 1 << 13, 1 << 12  # TAINT_UNSIGNED_MODULE (E), TAINT_OOT_MODULE (O)
# test_lab_assign's libvirtd in the guest and its L2 domains, for this module's scenarios too
guest_libvirtd, domains = test_lab_assign.guest_libvirtd, test_lab_assign.domains


def pcimgr(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def show(address: str) -> dict:
    r = pcimgr("show", address, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def group(address: str) -> int:
    return int(os.path.basename(os.readlink(f"/sys/bus/pci/devices/{address}/iommu_group")))


def model(hostdev_xml: str) -> str | None:
    """The <driver model=...> of a <hostdev>: the variant libvirt (>= 10.0) is to bind."""
    element = ET.fromstring(hostdev_xml).find("driver")
    return element.get("model") if element is not None else None


def tainted() -> int:
    return int(Path("/proc/sys/kernel/tainted").read_text())


def variant_tree() -> Path:
    """The harness's modules tree with the test variant (pcimgr.variant= on the command line),
    or a skip with the reason it could not be built on the host."""
    why = Path("/run/lab/variant-unavailable")
    if why.exists():
        pytest.skip(f"the test variant driver could not be built: {why.read_text().strip()}")
    m = re.search(r"\bpcimgr\.variant=(\S+)", Path("/proc/cmdline").read_text())
    if m is None:
        pytest.skip("the harness named no variant modules tree (pcimgr.variant=)")
    return Path(m[1])


@pytest.fixture
def variant() -> Iterator[None]:
    """The kernel's modules as shipped plus extra/pcimgr_test_vfio_pci.ko, depmod'ed, over
    /lib/modules/<version> for this test only (the other scenarios' `detach` of a VF must
    keep choosing vfio-pci)."""
    tree = variant_tree()
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    subprocess.run(["mount", "--bind", str(tree), str(MODULES)], check=True)
    try:
        yield
    finally:
        (PF_DIR / "sriov_numvfs").write_text("0")
        (PF_DIR / "sriov_drivers_autoprobe").write_text("1")
        subprocess.run(["rmmod", MODULE], capture_output=True)
        # udevd's libkmod may have the tree's index files mapped: detach lazily
        subprocess.run(["umount", "-l", str(MODULES)], check=True)
        subprocess.run(["udevadm", "control", "--reload"], check=True)
        subprocess.run(["rm", "-f", "/var/lib/pcimgr/journal.json"])


def test_detach_binds_the_variant_the_kernel_offers(variant: None) -> None:
    assert ALIAS in (MODULES / "modules.alias").read_text().splitlines()
    r = pcimgr("vfs", "create", PF, "2", "--driver", "host")
    assert r.exit_code == 0, r.output
    vf = VFS[0]
    assert driver(vf) == "igbvf"
    before = show(vf)
    assert before["vfio"] == {"ready": False, "kind": None, "driver": None, "device": None}
    assert before["detach_binds"] == MODULE
    assert model(before["hostdev_xml"]) == MODULE

    r = pcimgr("detach", vf)  # no --driver: pcimgr loads the module and binds it
    assert r.exit_code == 0, r.output
    assert f"{vf}: igbvf -> {MODULE}" in r.output
    assert f"IOMMU group {group(vf)} is viable for VFIO (/dev/vfio/{group(vf)})" in r.output
    assert driver(vf) == MODULE
    assert (Path("/sys/bus/pci/devices") / vf / "driver_override").read_text().strip() == MODULE
    # unsigned and out of tree: Debian's kernel without Secure Boot loads it, tainted. The
    # kernel's flags are sticky for the boot and other scenarios load test modules too, so
    # only the module's own taint says it was this load.
    assert Path(f"/sys/module/{MODULE}/taint").read_text().strip() == "OE"
    assert tainted() & (UNSIGNED | OUT_OF_TREE) == UNSIGNED | OUT_OF_TREE

    # what Linux 6.1 made of it: vfio-dev/vfioN below the function, its class link, no `dev`
    # (the device cdev came in 6.6), the group's node
    vdir = Path("/sys/bus/pci/devices") / vf / "vfio-dev"
    (name,) = os.listdir(vdir)
    assert re.fullmatch(r"vfio\d+", name)
    assert sorted(os.listdir(vdir / name)) == ["device", "power", "subsystem", "uevent"]
    assert not (vdir / name / "dev").exists()
    assert os.path.realpath(f"/sys/class/vfio-dev/{name}") == os.path.realpath(vdir / name)
    assert os.path.realpath(vdir / name / "subsystem") == os.path.realpath("/sys/class/vfio-dev")
    assert not os.path.exists("/dev/vfio/devices")
    assert os.path.exists(f"/dev/vfio/{group(vf)}")

    shown = show(vf)
    assert shown["vfio"] == {"ready": True, "kind": "variant", "driver": MODULE, "device": name}
    assert shown["detach_binds"] is None
    assert shown["vfio_nodes"] == {"group": ["/dev/vfio/vfio", f"/dev/vfio/{group(vf)}"],
                                   "cdev": None}
    assert shown["group"]["viable"] is True and shown["group"]["blockers"] == []
    assert model(shown["hostdev_xml"]) == MODULE
    assert show(VFS[1])["detach_binds"] == MODULE  # the other VF, still on igbvf

    # a second detach changes nothing: same driver and override, same vfio-dev, same node
    r = pcimgr("detach", vf)
    assert r.exit_code == 0 and "Nothing to do." in r.output, r.output
    assert driver(vf) == MODULE
    assert (Path("/sys/bus/pci/devices") / vf / "driver_override").read_text().strip() == MODULE
    assert os.listdir(vdir) == [name] and os.path.exists(f"/dev/vfio/{group(vf)}")

    r = pcimgr("rebind", vf)
    assert r.exit_code == 0, r.output
    assert f"{vf}: {MODULE} -> igbvf" in r.output
    assert driver(vf) == "igbvf"
    assert os.listdir(f"/sys/bus/pci/devices/{vf}/net")  # its interface again
    assert not vdir.exists() and not os.path.exists(f"/dev/vfio/{group(vf)}")


def test_variant_sequence_matches_the_recorded_answers(variant: None) -> None:
    """tests/lab/fixtures/conformance.json's `variant`: the alias depmod wrote, and the
    variant sequence of sysfs writes (conformance.VARIANT_SEQUENCE) answered as recorded."""
    recorded = conformance.load_fixture()
    aliases = conformance.variant_aliases((MODULES / "modules.alias").read_text())
    assert aliases == recorded["variant"]["modules_alias"] == [ALIAS]
    subprocess.run(["modprobe", "igbvf"], check=True)
    subprocess.run(["modprobe", MODULE], check=True)
    observed = conformance.run_variant_sequence(Sysfs("/sys"))
    for step, (real, expected) in enumerate(zip(observed, recorded["variant"]["observations"],
                                                strict=True)):
        assert real == expected, (
            f"step {step} {real['write']}: this kernel ({os.uname().release}) differs from "
            f"the fixture's ({recorded['kernel']}); refresh with python -m tests.lab.refresh")


def libvirt_version() -> tuple[int, ...]:
    """The guest's libvirt (the host's: Debian 12 has 9.0.0), as `virsh version` says."""
    r = libvirtd.virsh("version")
    m = re.search(r"Using library: libvirt (\d+)\.(\d+)\.(\d+)", r.stdout)
    assert m is not None, r.stdout + r.stderr
    return tuple(int(p) for p in m.groups())


def planned_hostdev(plan: str) -> ET.Element:
    """The <hostdev> a dry run's attach-device step would give libvirt."""
    m = re.search(r"<<EOF\n(.*?)\n\s*EOF", plan, re.S)
    assert m is not None, plan
    return ET.fromstring(m[1].strip())


def inactive_hostdevs(vm: str) -> list[ET.Element]:
    r = libvirtd.virsh("dumpxml", "--inactive", vm)
    assert r.returncode == 0, r.stderr
    return ET.fromstring(r.stdout).findall("./devices/hostdev")


# what libvirt 9.0 says starting a domain whose managed='no' hostdev is on a driver that is
# not one of its stubs (vfio-pci, pci-stub, ...: a list older than VFIO variant drivers)
UNMANAGED_REFUSAL = ("Requested operation is not valid: Unmanaged PCI device {} must be "
                     "manually detached from the host")


def unmanaged_hostdev(vf: str) -> str:
    """<hostdev managed='no'> for the VF, as pcimgr writes it for libvirt < 10.0."""
    domain, bus, rest = vf.split(":")
    slot, function = rest.split(".")
    return (f"<hostdev mode='subsystem' type='pci' managed='no'><source><address "
            f"domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' function='0x{function}'/>"
            "</source></hostdev>")


def attach_by_hand(vm: str, vf: str) -> None:
    """The VF as its own entry in the domain's config, by virsh, not by pcimgr."""
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(unmanaged_hostdev(vf))
        f.flush()
        r = libvirtd.virsh("attach-device", vm, f.name, "--config")
    assert r.returncode == 0, r.stderr


def refused(started: subprocess.CompletedProcess, vm: str, vf: str) -> None:
    assert started.returncode == 1, started.stdout
    assert UNMANAGED_REFUSAL.format(vf) in started.stderr, started.stderr
    assert libvirtd.virsh("domstate", vm).stdout.strip() == "shut off"
    assert not Path(f"/run/libvirt/qemu/{vm}.pid").exists()


def runs_with(started: subprocess.CompletedProcess, vm: str, vf: str) -> None:
    assert started.returncode == 0, started.stderr
    assert qemu_holds(vm, vf)  # the QEMU process has /dev/vfio/<group> open
    assert libvirtd.virsh("destroy", vm).returncode == 0


def release(vf: str, vm: str, back_to: str) -> None:
    r = pcimgr("release", vf)
    assert r.exit_code == 0, r.output
    assert hostdevs(vm) == []
    assert driver(vf) == back_to, r.output


def restart_libvirtd() -> None:
    libvirtd.stop(["libvirtd"])  # the daemon guest_libvirtd started; virtlogd stays
    assert eventually(lambda: not libvirtd.reachable(), 60)
    assert libvirtd.start() == ["libvirtd"]


def test_libvirt_9_and_a_vf_on_the_variant(variant: None, domains) -> None:
    """Issue 23: libvirt 9.0 predates <driver model=...> and VFIO variants. It refuses to
    start a domain whose managed='no' device is on the variant (it takes one only on a stub
    it knows, vfio-pci, pci-stub, unless it has released that address before: its
    in-memory list of inactive devices, emptied by a restart). So `pcimgr assign` binds
    vfio-pci there, and refuses a VF already on the variant; the domain starts."""
    version = libvirt_version()
    if version >= (10, 0, 0):
        pytest.skip(f"libvirt {version} has <driver model=...>: this scenario is libvirt < 10.0's")
    said = ".".join(map(str, version))
    vm = domains("vm-variant", False)
    assert pcimgr("vfs", "create", PF, "2", "--driver", "host").exit_code == 0
    vf = VFS[1]
    r = pcimgr("detach", vf)
    assert r.exit_code == 0 and f"{vf}: igbvf -> {MODULE}" in r.output, r.output

    # libvirt's own answer, for a VF on the variant in the XML by hand (libvirtd has
    # never released this address)
    attach_by_hand(vm, vf)
    refused(libvirtd.virsh("start", vm), vm, vf)
    assert driver(vf) == MODULE  # libvirt changed nothing
    release(vf, vm, "igbvf")  # found in the domain's XML, taken out, given back to igbvf

    # a VF already on the variant: assign refuses it, naming the detach that fixes it
    assert pcimgr("detach", vf).exit_code == 0 and driver(vf) == MODULE
    r = pcimgr("assign", vf, vm, "--config")
    assert r.exit_code == 4, r.output
    assert (f"refusing: {vf} is on the VFIO variant {MODULE}, and libvirt {said} predates "
            "VFIO variant drivers") in r.output, r.output
    assert f"`pcimgr detach {vf} --driver vfio-pci` first" in r.output
    assert inactive_hostdevs(vm) == [] and driver(vf) == MODULE
    assert pcimgr("rebind", vf).exit_code == 0 and driver(vf) == "igbvf"

    # a VF on igbvf: assign binds vfio-pci, not the variant, saying why; the domain starts
    r = pcimgr("assign", vf, vm, "--config", "--dry-run")
    assert r.exit_code == 0, r.output
    assert f"{vf}: igbvf -> vfio-pci" in r.output
    assert f"binding vfio-pci, not its VFIO variant {MODULE}: libvirt {said}" in r.output
    planned = planned_hostdev(r.output)
    assert planned.get("managed") == "no" and planned.find("driver") is None, r.output
    assert driver(vf) == "igbvf" and inactive_hostdevs(vm) == []
    r = pcimgr("assign", vf, vm, "--config")
    assert r.exit_code == 0, r.output
    assert driver(vf) == "vfio-pci"
    (hostdev,) = inactive_hostdevs(vm)
    assert hostdev.get("managed") == "no" and hostdev.find("driver") is None
    runs_with(libvirtd.virsh("start", vm), vm, vf)
    release(vf, vm, "igbvf")  # assign moved it: back to igbvf
    assert os.listdir(f"/sys/bus/pci/devices/{vf}/net")

    # why the refusal cannot be left to libvirt: now that libvirtd has released this
    # address, it starts the domain with the VF on the variant (QEMU holds its group)...
    assert pcimgr("detach", vf).exit_code == 0 and driver(vf) == MODULE
    attach_by_hand(vm, vf)
    runs_with(libvirtd.virsh("start", vm), vm, vf)
    # ...until libvirtd restarts
    restart_libvirtd()
    refused(libvirtd.virsh("start", vm), vm, vf)
    release(vf, vm, "igbvf")


def status() -> tuple[int, dict[str, dict]]:
    r = pcimgr("status", "--json")
    return r.exit_code, {d["address"]: d for d in json.loads(r.stdout)}


def remove_scsi() -> None:
    (Path("/sys/bus/pci/devices") / SCSI / "remove").write_text("1")
    subprocess.run(["udevadm", "settle"], check=True)
    assert not os.path.exists(f"/sys/bus/pci/devices/{SCSI}")


def rescan() -> None:
    Path("/sys/bus/pci/rescan").write_text("1")
    subprocess.run(["udevadm", "settle"], check=True)
    assert driver(SCSI) == "virtio-pci"
    # the SCSI scan behind it is asynchronous: its disk comes a moment later
    assert eventually(lambda: os.path.exists("/sys/class/block/sda1"), 60)


@pytest.fixture
def renumbering() -> Iterator[None]:
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    scsi_group = group(SCSI)
    yield
    for address in VFS:
        pcimgr("undefine", address)
    (PF_DIR / "sriov_numvfs").write_text("0")
    for address in E1000:
        if driver(address) != "e1000":
            by_hand_back(address)
    # the virtio-scsi controller back under its own number: gone and found again with no
    # VFs about, it takes the lowest free one, its old one
    if not os.path.exists(f"/sys/bus/pci/devices/{SCSI}") or group(SCSI) != scsi_group:
        if os.path.exists(f"/sys/bus/pci/devices/{SCSI}"):
            remove_scsi()
        rescan()
    assert group(SCSI) == scsi_group
    subprocess.run(["rm", "-f", "/var/lib/pcimgr/journal.json"])


def test_a_definition_survives_its_groups_new_number(renumbering: None) -> None:
    """Issue 23: the kernel numbers IOMMU groups lowest-free-first, so a VF recreated
    after another device took its old number comes back under another one. Functions
    moved to vfio-pci take no number: only a device that appears does (here the
    virtio-scsi controller, removed and found again by a rescan, as a hot plug)."""
    vf = VFS[0]
    assert pcimgr("vfs", "create", PF, "2", "--driver", "vfio-pci").exit_code == 0
    first = group(vf)
    r = pcimgr("define", vf, "--driver", "vfio-pci")
    assert r.exit_code == 0, r.output
    defined = json.loads((CONFIG / f"{vf}.json").read_text())
    assert defined["iommu_group"] == first and defined["group_members"] == [vf]
    code, found = status()
    assert code == 0 and found[vf]["drift"] == [], found

    # another group held by vfio-pci while the VFs are gone: the numbers stay
    r = pcimgr("detach", E1000[0], "--group")
    assert r.exit_code == 0, r.output
    assert pcimgr("vfs", "destroy", PF).exit_code == 0
    assert pcimgr("vfs", "create", PF, "2", "--driver", "vfio-pci").exit_code == 0
    assert group(vf) == first

    # a device appearing takes the lowest free number: the controller gives up its group,
    # the recreated VF takes it, the controller comes back under a new one
    scsi_group = group(SCSI)
    assert scsi_group < first
    assert pcimgr("vfs", "destroy", PF).exit_code == 0
    remove_scsi()
    assert pcimgr("vfs", "create", PF, "2", "--driver", "vfio-pci").exit_code == 0
    rescan()
    assert group(vf) == scsi_group != first
    assert group(SCSI) not in (scsi_group, first)

    # same members, another number: no drift, and apply applies
    code, found = status()
    assert code == 0 and found[vf]["drift"] == [], found
    assert found[vf]["iommu_group"] == first  # the number it was defined under
    assert pcimgr("rebind", vf).exit_code == 0
    assert driver(vf) == "igbvf"
    code, found = status()
    assert code == 10 and found[vf]["drift"] == ["driver is igbvf, defined vfio-pci"], found
    r = pcimgr("apply")
    assert r.exit_code == 0, r.output
    assert f"{vf}: igbvf -> vfio-pci" in r.output
    assert driver(vf) == "vfio-pci"
    # and the boot path, which selects a definition's group by its members
    assert pcimgr("rebind", vf).exit_code == 0
    r = pcimgr("apply", "--device", vf)
    assert r.exit_code == 0, r.output
    assert driver(vf) == "vfio-pci"
    code, found = status()
    assert code == 0 and found[vf]["drift"] == [], found
