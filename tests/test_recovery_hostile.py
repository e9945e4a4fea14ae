"""Recovery never trusts a journal it did not check: journals planted in a simulated host's
state directory that a fresh plan would never make are refused (exit 11, one line naming
the journal), and nothing they ask for is done."""

import os
from pathlib import Path
from typing import Any

from pcimgr.core import hostdev_xml
from pcimgr.core.address import PciAddress
from pcimgr.drivers.binding import BindDriver
from pcimgr.plans import statefile
from pcimgr.sriov.steps import SetLink, SetNumVfs
from tests.conftest import driver_of, tree

MANAGEMENT_NIC = "0000:00:03.0"  # the server profile's eth0: its address and default route
LPC_BRIDGE = "0000:00:1f.0"


def plant(root: Path, *steps: dict[str, Any], command: str = "detach 00:03.0") -> Path:
    """A well-formed journal as a killed run leaves it (pcimgr's own write: mode 0600)."""
    state = root / ".pcimgr-state"
    path = state / "journal.json"
    statefile.write(str(path), {"command": command, "pid": 4242, "started": 0.0,
                                "steps": [{"step": s, "state": "applied"} for s in steps]},
                    readable=False, top=str(state))
    return path


def to_vfio(address: str, now: str | None) -> dict[str, Any]:
    """A bind step whose undo puts `address` on vfio-pci."""
    return BindDriver(address, now, None, "vfio-pci", "vfio-pci").to_json()


def attach(uri: str, xml: str | None = None) -> dict[str, Any]:
    xml = xml or hostdev_xml.to_string(hostdev_xml.hostdev(PciAddress.parse("04:00.0")))
    return {"kind": "attach", "module": "pcimgr.guests.steps", "address": "0000:04:00.0",
            "uri": uri, "domain": "vm1", "uuid": "6695eb01-f6a4-8304-79aa-97f2502e193f",
            "xml": xml, "live": False, "config": True, "mac": None}


def test_an_undo_taking_the_management_nic_is_refused(run, make_host) -> None:
    root = make_host("server")
    journal = plant(root, to_vfio(MANAGEMENT_NIC, "virtio-pci"))
    r = run("--sysfs-root", root, "recover")
    assert r.exit_code == 11, r.output
    last = r.output.splitlines()[-1]
    assert f"refusing the journal {journal}" in last and MANAGEMENT_NIC in last
    assert "default route" in last and "recover --discard" in last
    assert driver_of(root, MANAGEMENT_NIC) == "virtio-pci" and journal.exists()
    # the recovery a changing command runs first refuses it too, before its own work
    r = run("--sysfs-root", root, "detach", "04:00.0", "--group")
    assert r.exit_code == 11 and r.output.count("\n") == 1, r.output
    assert driver_of(root, MANAGEMENT_NIC) == "virtio-pci"
    assert driver_of(root, "0000:04:00.0") == "e1000e"
    # read commands still work, and mention the journal
    assert run("--sysfs-root", root, "list").exit_code == 0


def test_recover_force_still_never_takes_the_lpc_bridge(run, make_host) -> None:
    root = make_host("server")
    journal = plant(root, to_vfio(LPC_BRIDGE, None), command="detach 00:1f.0")
    before = tree(root)
    for force in ((), ("--force",)):
        r = run("--sysfs-root", root, "recover", *force)
        assert r.exit_code == 11, r.output
        assert "ISA/LPC bridge" in r.output and f"refusing the journal {journal}" in r.output
        assert "not even with --force" in r.output
        assert driver_of(root, LPC_BRIDGE) is None
        assert tree(root) == before


def test_a_journal_uri_that_runs_a_program_is_refused(run, demo_root, tmp_path) -> None:
    ran = tmp_path / "ran"
    script = tmp_path / "x"
    script.write_text(f"#!/bin/sh\ntouch {ran}\n")
    script.chmod(0o755)
    journal = plant(demo_root, attach(f"qemu+ext:///system?command={script}"))
    for args in (("recover",), ("recover", "--dry-run"), ("detach", "04:00.0", "--group")):
        r = run("--sysfs-root", demo_root, *args)
        assert r.exit_code == 11 or args[-1] == "--dry-run", (args, r.output)
        assert "refusing libvirt URI" in r.output and str(journal) in r.output
    assert not ran.exists()
    assert driver_of(demo_root, "0000:04:00.0") == "e1000e"


def test_connect_takes_only_the_uris_pcimgr_uses(run, demo_root, tmp_path) -> None:
    ran = tmp_path / "ran"
    script = tmp_path / "x"
    script.write_text(f"#!/bin/sh\ntouch {ran}\n")
    script.chmod(0o755)
    r = run("--sysfs-root", demo_root, "--connect", f"qemu+ext:///system?command={script}",
            "assign", "04:00.0", "vm1", "--group", "--dry-run")
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "refusing libvirt URI" in r.output
    assert not ran.exists()


def test_a_group_writable_journal_is_refused(run, demo_root) -> None:
    journal = plant(demo_root, BindDriver("0000:04:00.0", "vfio-pci", "vfio-pci", "e1000e",
                                          None).to_json())
    os.chmod(journal, 0o620)
    r = run("--sysfs-root", demo_root, "recover")
    assert r.exit_code == 11, r.output
    assert f"refusing the journal {journal}: its mode is 0620" in r.output
    assert journal.exists() and driver_of(demo_root, "0000:04:00.0") == "e1000e"


def test_recover_dry_run_shows_each_call_with_its_uri(run, demo_root) -> None:
    plant(demo_root, attach("test:///default"),
          BindDriver("0000:04:00.0", "vfio-pci", "vfio-pci", "e1000e", None).to_json())
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "recover", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "virsh -c test:///default detach-device" in r.output
    assert "echo > /sys/bus/pci/devices/0000:04:00.0/driver_override" in r.output
    assert tree(demo_root) == before


def test_a_driver_name_that_is_a_path_is_refused(run, demo_root) -> None:
    journal = plant(demo_root, BindDriver("0000:04:00.0", "e1000e", None, "../../../devices",
                                          None).to_json())
    r = run("--sysfs-root", demo_root, "recover")
    assert r.exit_code == 11, r.output
    assert f"refusing the journal {journal}" in r.output and "not a driver name" in r.output
    assert driver_of(demo_root, "0000:04:00.0") == "e1000e"


def test_an_undo_removing_vfs_the_host_uses_is_refused(run, make_host) -> None:
    """The server's PF 03:00.0 has 2 VFs, and the host has an address on its VF 03:10.0: a
    journal claiming the PF had none before would destroy them."""
    root = make_host("server")
    journal = plant(root, SetNumVfs("0000:03:00.0", 2, 0, (), "enp3s0f0", 5.0, False).to_json(),
                    command="vfs create 03:00.0 2")
    r = run("--sysfs-root", root, "recover")
    assert r.exit_code == 11, r.output
    assert f"refusing the journal {journal}" in r.output and "0000:03:10.0" in r.output
    assert (root / "bus/pci/devices/0000:03:00.0/sriov_numvfs").read_text().strip() == "2"


def test_an_undo_taking_an_interface_down_is_checked(run, make_host) -> None:
    root = make_host("server")
    before = tree(root)
    # the management interface, by its own function
    plant(root, SetLink(MANAGEMENT_NIC, "eth0", True).to_json())
    r = run("--sysfs-root", root, "recover")
    assert r.exit_code == 11 and "default route" in r.output, r.output
    # the same interface, claimed by another function
    plant(root, SetLink("0000:04:00.0", "eth0", True).to_json())
    r = run("--sysfs-root", root, "recover", "--force")
    assert r.exit_code == 11, r.output
    assert "interface 'eth0', which is not 0000:04:00.0's (enp4s0f0)" in r.output
    assert tree(root) == before


def test_a_journal_device_xml_other_than_pcimgrs_is_refused(run, demo_root) -> None:
    """Undoing a detach attaches the journal's XML: never a host disk, a ROM file or a
    script, nor another function's device."""
    nic = hostdev_xml.to_string(hostdev_xml.hostdev(PciAddress.parse("04:00.0")))
    for xml, why in (("<disk type='block'><source dev='/dev/sda'/><target dev='vdb'/></disk>",
                      "is a <disk type='block'>"),
                     (nic.replace("</hostdev>", "<rom file='/etc/shadow'/></hostdev>"),
                      "names a host file or program"),
                     ("<interface type='ethernet'><script path='/tmp/x'/></interface>",
                      "is a <interface type='ethernet'>"),
                     (hostdev_xml.to_string(hostdev_xml.hostdev(PciAddress.parse("04:00.1"))),
                      "is not 0000:04:00.0's")):
        detach = attach("test:///default") | {
            "kind": "detach", "live_xml": None, "config_xml": xml, "timeout": 5.0}
        del detach["xml"], detach["live"], detach["config"]
        journal = plant(demo_root, detach)
        r = run("--sysfs-root", demo_root, "recover")
        assert r.exit_code == 11, r.output
        assert str(journal) in r.output and why in r.output, (why, r.output)


def test_a_journal_network_other_than_a_pools_is_refused(run, demo_root) -> None:
    """Undoing a pool's removal defines the journal's network again: only a hostdev one of
    the step's name, on its own PF's interface."""
    pool = ("<network><name>pool1</name><forward mode='hostdev' managed='yes'>"
            "<pf dev='{dev}'/></forward></network>")
    for xml, why in (("<network><name>pool1</name><forward mode='nat'/>"
                      "<ip address='10.9.9.1' netmask='255.255.255.0'/></network>",
                      "not a pool's <network>"),
                     (pool.format(dev="enp5s0f0").replace("pool1", "other"),
                      "not a pool's <network>"),
                     (pool.format(dev="eth0"), "interface 'eth0', which is not 0000:05:00.0's")):
        journal = plant(demo_root, {"kind": "net-undefine", "module": "pcimgr.guests.network_steps",
                                    "address": "0000:05:00.0", "uri": "test:///default",
                                    "name": "pool1", "xml": xml, "active": True})
        r = run("--sysfs-root", demo_root, "recover")
        assert r.exit_code == 11, r.output
        assert str(journal) in r.output and why in r.output, (why, r.output)
