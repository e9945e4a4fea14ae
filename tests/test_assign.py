"""assign/release against a real libvirtd (qemu:///system), on a simulated host's functions.

This machine has no IOMMU: libvirt attaches devices to a domain's persistent
configuration, and refuses a live attach ("host doesn't support passthrough"),
which is a real attach failure after a real detach. Live hot-plug and unplug
are proven in the lab (tests/lab/test_lab_assign.py).
"""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pcimgr.core.errors import LibvirtFailure
from pcimgr.host.libvirt_adapter import Libvirt
from pcimgr.sim.machine import SimulatedMachine
from tests import libvirtd
from tests.conftest import driver_of, tree

PAIR = ("0000:04:00.0", "0000:04:00.1")


def hostdevs(domain: str, inactive: bool = True) -> list[dict]:
    """The PCI devices in a domain's XML: element, managed, source address, mac, vlan."""
    r = libvirtd.virsh("dumpxml", *(["--inactive"] if inactive else []), domain)
    assert r.returncode == 0, r.stderr
    root = ET.fromstring(r.stdout)
    found = []
    for e in (root.findall("./devices/hostdev")
              + root.findall("./devices/interface[@type='hostdev']")):
        a = e.find("./source/address")
        mac, tag = e.find("./mac"), e.find("./vlan/tag")
        found.append({"element": e.tag, "managed": e.get("managed"),
                      "address": {k: a.get(k) for k in ("domain", "bus", "slot", "function")},
                      "mac": mac.get("address") if mac is not None else None,
                      "vlan": tag.get("id") if tag is not None else None})
    return found


def pcimgr(run, root: Path, uri: str, *args: str):
    return run("--sysfs-root", root, "--connect", uri, *args)


def test_assign_and_release_a_pf_with_its_group(run, demo_root, libvirt_uri, make_domain) -> None:
    vm = make_domain("pf")
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "04:00.0", vm)
    assert r.exit_code == 4 and "--group" in r.output  # the pair shares group 5
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "04:00.0", vm, "--group")
    assert r.exit_code == 0, r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["vfio-pci", "vfio-pci"]
    assert hostdevs(vm) == [{"element": "hostdev", "managed": "no", "mac": None, "vlan": None,
                             "address": {"domain": "0x0000", "bus": "0x04", "slot": "0x00",
                                         "function": "0x0"}}]
    record = json.loads((demo_root / ".pcimgr-state/assignments/0000:04:00.0.json").read_text())
    assert record["domain"] == vm and record["moved"] == list(PAIR)
    listing = json.loads(pcimgr(run, demo_root, libvirt_uri, "list", "--json").output)
    assert {d["address"]: d["holders"] for d in listing}["0000:04:00.0"] == [vm]
    assert {d["address"]: d["holders"] for d in listing}["0000:04:00.1"] == []

    r = pcimgr(run, demo_root, libvirt_uri, "release", "04:00.0")
    assert r.exit_code == 0, r.output
    assert f"0000:04:00.0: detach from {vm} (persistent config)" in r.output
    assert hostdevs(vm) == []
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert not (demo_root / ".pcimgr-state/assignments/0000:04:00.0.json").exists()


def test_second_assign_to_another_vm_is_refused(run, demo_root, libvirt_uri, make_domain) -> None:
    one, two = make_domain("one"), make_domain("two")
    assert pcimgr(run, demo_root, libvirt_uri, "assign", "04:00.0", one, "--group").exit_code == 0
    before = tree(demo_root)
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "04:00.0", two, "--group")
    assert r.exit_code == 4, r.output
    assert f"0000:04:00.0 is already assigned to {one} (persistent config)" in r.output
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "04:00.1", two, "--group")
    assert r.exit_code == 4, r.output
    assert f"shares IOMMU group 5 with 0000:04:00.0, which {one} (persistent config) has" \
        in r.output
    assert hostdevs(two) == [] and tree(demo_root) == before
    assert pcimgr(run, demo_root, libvirt_uri, "release", "04:00.0").exit_code == 0


def test_unknown_vm_detaches_nothing(run, demo_root, libvirt_uri) -> None:
    before = tree(demo_root)
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "04:00.0", "no-such-vm", "--group")
    assert r.exit_code == 3 and "no domain 'no-such-vm' on qemu:///system" in r.output
    assert tree(demo_root) == before


def test_a_vf_with_mac_and_vlan_becomes_an_interface(run, demo_root, libvirt_uri,
                                                     make_domain) -> None:
    vm = make_domain("vf")
    assert run("--sysfs-root", demo_root, "vfs", "create", "05:00.0", "2").exit_code == 0
    SimulatedMachine(str(demo_root)).kernel.set_link("0000:05:00.0", "enp5s0f0", False)
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "05:10.2", vm, "--mac",
               "52:54:00:5e:00:02", "--vlan", "100")
    assert r.exit_code == 0, r.output
    assert "enp5s0f0, the PF, is down: libvirt will refuse to start the guest" in r.output
    # libvirt writes managed only when 'yes' on an <interface>
    assert hostdevs(vm) == [{"element": "interface", "managed": None,
                             "mac": "52:54:00:5e:00:02", "vlan": "100",
                             "address": {"domain": "0x0000", "bus": "0x05", "slot": "0x10",
                                         "function": "0x2"}}]
    vf = json.loads(pcimgr(run, demo_root, libvirt_uri, "vfs", "list", "05:00.0",
                           "--json").output)[0]["vfs"][1]
    assert vf["holders"] == [vm]
    for args in (("vfs", "destroy", "05:00.0"), ("vfs", "create", "05:00.0", "3")):
        r = pcimgr(run, demo_root, libvirt_uri, *args)
        assert r.exit_code == 4, r.output
        assert f"0000:05:10.2 ({vm}, persistent config)" in r.output
    assert (demo_root / "bus/pci/devices/0000:05:10.2").exists()
    # nor does a definition with another count remove it
    assert run("--sysfs-root", demo_root, "define", "05:00.0", "--vfs", "3").exit_code == 0
    r = pcimgr(run, demo_root, libvirt_uri, "apply")
    assert r.exit_code == 10 and f"0000:05:10.2 ({vm}, persistent config)" in r.output
    assert (demo_root / "bus/pci/devices/0000:05:10.2").exists()
    r = pcimgr(run, demo_root, libvirt_uri, "release", "05:10.2")
    assert r.exit_code == 0, r.output
    assert hostdevs(vm) == []
    assert driver_of(demo_root, "0000:05:10.2") == "vfio-pci"  # created for guests: stays


def test_mac_on_a_function_that_is_not_a_vf_is_bad_input(run, demo_root, libvirt_uri,
                                                         make_domain) -> None:
    vm = make_domain("notvf")
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "04:00.0", vm, "--group", "--mac",
               "52:54:00:5e:00:02")
    assert r.exit_code == 2 and "is not a VF of a NIC" in r.output


def test_live_attach_failure_rolls_the_detach_back(run, demo_root, libvirt_uri,
                                                   make_domain) -> None:
    vm = make_domain("live", running=True)
    before = tree(demo_root)
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "04:00.0", vm, "--group")
    assert r.exit_code == 7, r.output
    assert "cannot pass devices through to a running guest" in r.output
    assert "the host is as it was before" in r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert tree(demo_root) == before
    assert hostdevs(vm) == [] and hostdevs(vm, inactive=False) == []


def test_injected_attach_failure_rolls_back(run, demo_root, libvirt_uri, make_domain,
                                            mocker) -> None:
    vm = make_domain("inject")
    mocker.patch.object(Libvirt, "attach", side_effect=LibvirtFailure("attaching: injected"))
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "04:00.0", vm, "--group")
    assert r.exit_code == 7 and "injected" in r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert not (demo_root / ".pcimgr-state/assignments/0000:04:00.0.json").exists()


def test_release_of_a_device_held_only_in_the_persistent_config(run, demo_root, libvirt_uri,
                                                                make_domain) -> None:
    vm = make_domain("cfg", running=True)
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "04:00.0", vm, "--group", "--no-live")
    assert r.exit_code == 0, r.output
    assert len(hostdevs(vm)) == 1 and hostdevs(vm, inactive=False) == []
    dry = pcimgr(run, demo_root, libvirt_uri, "release", "04:00.0", "--dry-run")
    assert "detach-device" in dry.output and "--config" in dry.output and "--live" not in dry.output
    r = pcimgr(run, demo_root, libvirt_uri, "-v", "release", "04:00.0")
    assert r.exit_code == 0, r.output
    assert hostdevs(vm) == []
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    # -v: the libvirt change, then the writes giving both ports back, as they happen
    trace = [line for line in r.output.splitlines() if line.startswith("pcimgr: ")]
    assert trace[0].startswith(f"pcimgr: libvirt {libvirt_uri}: detachDeviceFlags(config)")
    assert sum("drivers_probe" in line for line in trace) == 2


def test_release_finds_a_device_attached_by_hand(run, demo_root, libvirt_uri,
                                                 make_domain, tmp_path) -> None:
    vm = make_domain("byhand")
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0
    xml = tmp_path / "h.xml"
    xml.write_text(run("--sysfs-root", demo_root, "xml", "04:00.0").output)
    assert libvirtd.virsh("attach-device", vm, str(xml), "--config").returncode == 0
    r = pcimgr(run, demo_root, libvirt_uri, "release", "04:00.0")
    assert r.exit_code == 0, r.output
    assert hostdevs(vm) == []
    assert driver_of(demo_root, "0000:04:00.0") == "e1000e"


def test_managed_leaves_binding_to_libvirt(run, demo_root, libvirt_uri, make_domain) -> None:
    vm = make_domain("managed")
    r = pcimgr(run, demo_root, libvirt_uri, "assign", "04:00.0", vm, "--group", "--managed")
    assert r.exit_code == 0, r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]
    assert hostdevs(vm)[0]["managed"] == "yes"
    assert pcimgr(run, demo_root, libvirt_uri, "release", "04:00.0").exit_code == 0
    assert hostdevs(vm) == []


KILL_AFTER_ATTACH = """
import os, sys
from pcimgr.host.libvirt_adapter import Libvirt
real = Libvirt.attach
def attach(self, *args):
    real(self, *args)
    os._exit(9)
Libvirt.attach = attach
from pcimgr.cli.app import main
main(["--sysfs-root", sys.argv[1], "--connect", sys.argv[2], "assign", "04:00.0", sys.argv[3],
      "--group"])
"""


def test_killed_assign_is_undone_by_the_next_run(demo_root, libvirt_uri, make_domain) -> None:
    vm = make_domain("killed")
    p = subprocess.run([sys.executable, "-c", KILL_AFTER_ATTACH, str(demo_root), libvirt_uri, vm])
    assert p.returncode == 9
    assert len(hostdevs(vm)) == 1
    assert [driver_of(demo_root, a) for a in PAIR] == ["vfio-pci", "vfio-pci"]
    journal = json.loads((demo_root / ".pcimgr-state/journal.json").read_text())
    assert [e["step"]["kind"] for e in journal["steps"]] == ["bind", "bind", "attach"]
    r = subprocess.run([sys.executable, "-m", "pcimgr", "--sysfs-root", str(demo_root),
                        "--connect", libvirt_uri, "rebind", "04:00.0"],
                       capture_output=True, text=True)
    assert "found an unfinished `assign 0000:04:00.0" in r.stderr, r.stderr
    assert hostdevs(vm) == []
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


def test_a_wrong_uri_is_one_line(run, demo_root) -> None:
    r = run("--sysfs-root", demo_root, "--connect", "qemu+unix:///system?socket=/nonexistent",
            "assign", "04:00.0", "vm1", "--group")
    assert r.exit_code == 2 and r.output.count("\n") == 1  # no query parameters (issue 22)
    assert "refusing libvirt URI 'qemu+unix:///system?socket=/nonexistent'" in r.output


def test_dry_run_against_the_test_driver_needs_no_daemon(run, demo_root) -> None:
    # libvirt's in-process test driver has a running, persistent domain called "test"
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "--connect", "test:///default", "assign", "04:00.0",
            "test", "--group", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "attach to test (running guest and persistent config)" in r.output
    assert "attach-device test /dev/stdin --live --config" in r.output
    assert tree(demo_root) == before


@pytest.mark.parametrize("args, words", [
    (("--interface", "--mac", "52:54:00:5e:00:02", "--vlan", "100"),
     ['<interface type="hostdev" managed="yes">', '<mac address="52:54:00:5e:00:02" />',
      '<address domain="0x0000" bus="0x07" slot="0x00" function="0x2" type="pci" />',
      '<tag id="100" />']),
    (("--mac", "52:54:00:5e:00:02"), ["add --interface"]),
])
def test_xml_interface_form(run, demo_root, args, words) -> None:
    r = run("--sysfs-root", demo_root, "xml", "07:00.2", *args)
    for w in words:
        assert w in r.output, r.output


def test_without_the_libvirt_binding_reads_work_and_guests_say_how(run, demo_root: Path,
                                                                    mocker) -> None:
    """libvirt-python is an extra: read commands run without it, and assign says in one line
    how to install it."""
    mocker.patch.dict(sys.modules, {"libvirt": None})  # `import libvirt` raises ImportError
    # a process without the binding has no connection either (earlier tests opened some)
    from pcimgr.host import libvirt_adapter
    mocker.patch.dict(libvirt_adapter._connections, clear=True)
    r = run("--sysfs-root", demo_root, "--connect", "test:///default", "list")
    assert r.exit_code == 0 and "guests unknown" in r.output
    r = run("--sysfs-root", demo_root, "--connect", "test:///default", "assign", "04:00.0",
            "test", "--group", "--dry-run")
    assert r.exit_code != 0 and r.output.count("\n") == 1
    assert "pip install 'pcimgr[libvirt]'" in r.output and "Traceback" not in r.output


def test_no_system_daemon_is_known_without_the_binding(run, demo_root: Path, mocker,
                                                       tmp_path: Path) -> None:
    """qemu:///system with none of its sockets: reads say so and changes fail in one line,
    before the binding is imported (it is most of a small host's `list`)."""
    from pcimgr.host import libvirt_adapter, libvirt_uri
    sockets = (str(tmp_path / "libvirt-sock"), str(tmp_path / "virtqemud-sock"))
    mocker.patch.object(libvirt_uri, "_SYSTEM_SOCKETS", sockets)
    mocker.patch.dict(libvirt_adapter._connections, clear=True)
    mocker.patch.dict(sys.modules, {"libvirt": None})  # an import would say "not installed"
    r = run("--sysfs-root", demo_root, "--connect", "qemu:///system", "list")
    assert r.exit_code == 0 and "pcimgr: note: guests unknown: cannot connect to " \
        "qemu:///system: no libvirt daemon listens" in r.output and "not installed" not in r.output
    r = run("--sysfs-root", demo_root, "--connect", "qemu:///system", "assign", "04:00.0",
            "vm1", "--group", "--dry-run")
    assert r.exit_code != 0 and r.output.count("\n") == 1
    assert "no libvirt daemon listens" in r.output and "systemctl start libvirtd" in r.output
    (tmp_path / "virtqemud-sock").touch()  # socket activation: the file is there first
    assert libvirt_adapter.absent_daemon("qemu:///system") is None
    assert libvirt_adapter.absent_daemon("qemu+ssh://h/system") is None
