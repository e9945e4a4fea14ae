"""define / undefine / apply / status on simulated hosts: files, drift, refusals, idempotence."""

import json
import os
import stat
from pathlib import Path

import pytest

from pcimgr.sim.machine import SimulatedMachine
from tests.conftest import driver_of, tree

IGB = "0000:05:00.0"


def cfg(root: Path) -> Path:
    return root / ".pcimgr-config"


def status(run, root: Path):
    r = run("--sysfs-root", root, "status", "--json")
    return r.exit_code, {e["address"]: e for e in json.loads(r.output.split("\npcimgr:")[0])}


def edit(root: Path, address: str, **changes: object) -> None:
    path = cfg(root) / "devices" / f"{address}.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_define_writes_readable_files_for_people_and_udev(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci", "--group")
    assert r.exit_code == 0, r.output
    assert "Defined 0000:04:00.0 (8086:105e, IOMMU group 5): driver vfio-pci" in r.output
    assert "Defined 0000:04:00.1 (8086:105e, IOMMU group 5): driver vfio-pci" in r.output
    path = cfg(demo_root) / "devices/0000:04:00.0.json"
    assert json.loads(path.read_text()) == {
        "format": 1, "address": "0000:04:00.0", "vendor_id": "8086", "device_id": "105e",
        "subsystem_vendor_id": "8086", "subsystem_device_id": "115e", "iommu_group": 5,
        "group_members": ["0000:04:00.0", "0000:04:00.1"], "owner": None,
        "driver": "vfio-pci", "vfs": None, "vf_driver": None, "vf": {}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    env = cfg(demo_root) / "udev/0000:04:00.0_8086:105E.env"  # %k and the uevent's PCI_ID
    assert env.read_text() == "PCIMGR_DRIVER=vfio-pci\n"
    assert driver_of(demo_root, "0000:04:00.0") == "e1000e"  # defining changes nothing yet


def test_apply_then_status_then_drift_then_apply(run, demo_root: Path) -> None:
    for args in (("04:00.0", "--driver", "vfio-pci", "--group"), ("05:00.0", "--vfs", "2"),
                 ("05:00.0", "--vf", "0", "--mac", "52:54:00:5e:00:01", "--vlan", "100")):
        assert run("--sysfs-root", demo_root, "define", *args).exit_code == 0
    code, found = status(run, demo_root)
    assert code == 10
    assert found["0000:04:00.0"]["drift"] == ["driver is e1000e, defined vfio-pci"]
    assert found[IGB]["drift"] == ["0 VF(s), defined 2"]

    r = run("--sysfs-root", demo_root, "apply")
    assert r.exit_code == 0, r.output
    assert driver_of(demo_root, "0000:04:00.0") == "vfio-pci"
    assert [driver_of(demo_root, v) for v in ("0000:05:10.0", "0000:05:10.2")] == ["vfio-pci"] * 2
    vf0 = json.loads(run("--sysfs-root", demo_root, "vfs", "list", IGB,
                         "--json").output)[0]["vfs"][0]
    assert (vf0["mac"], vf0["vlan"]) == ("52:54:00:5e:00:01", 100)
    code, found = status(run, demo_root)
    assert code == 0 and all(e["ok"] for e in found.values())

    again = run("--sysfs-root", demo_root, "apply")
    assert again.exit_code == 0 and "The host matches the definitions." in again.output

    # behind pcimgr's back: the count and a MAC change
    SimulatedMachine(str(demo_root)).sysfs.write_attr(f"bus/pci/devices/{IGB}/sriov_numvfs", "0")
    code, found = status(run, demo_root)
    assert code == 10 and found[IGB]["drift"] == ["0 VF(s), defined 2"]
    assert run("--sysfs-root", demo_root, "apply", "--device", "05:00.0").exit_code == 0
    assert run("--sysfs-root", demo_root, "vfs", "set", IGB, "0", "--mac",
               "52:54:00:5e:00:09").exit_code == 0
    code, found = status(run, demo_root)
    assert found[IGB]["drift"] == ["VF 0 mac is 52:54:00:5e:00:09, defined 52:54:00:5e:00:01"]
    assert run("--sysfs-root", demo_root, "apply").exit_code == 0
    assert status(run, demo_root)[0] == 0


def test_moved_hardware_is_reported_and_never_applied(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci",
               "--group").exit_code == 0
    edit(demo_root, "0000:04:00.0", device_id="10d3")  # the card defined there was an 82574L
    code, found = status(run, demo_root)
    assert code == 10
    assert found["0000:04:00.0"]["drift"] == [
        "different hardware: 8086:105e here, 8086:10d3 defined"]
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "apply")
    assert r.exit_code == 10 and "skipped 0000:04:00.0: different hardware" in r.output
    assert tree(demo_root) == before


@pytest.mark.parametrize("changes, drift", [
    ({"group_members": ["0000:04:00.0"]},
     "IOMMU group members changed: 0000:04:00.0, 0000:04:00.1 now, defined with 0000:04:00.0"),
    ({"subsystem_device_id": "0000"}, "different subsystem: 8086:115e here, 8086:0000 defined"),
    ({"address": "0000:44:00.0"}, "missing: no function at this address"),
])
def test_drift_kinds(run, demo_root: Path, changes, drift) -> None:
    assert run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci",
               "--group").exit_code == 0
    if "address" in changes:
        src = cfg(demo_root) / "devices/0000:04:00.0.json"
        data = json.loads(src.read_text()) | changes
        src.unlink()
        (cfg(demo_root) / "devices/0000:44:00.0.json").write_text(json.dumps(data))
    else:
        edit(demo_root, "0000:04:00.0", **changes)
    code, found = status(run, demo_root)
    assert code == 10 and drift in found[changes.get("address", "0000:04:00.0")]["drift"]


def test_apply_keeps_the_safety_refusals(run, demo_root: Path) -> None:
    # the management NIC carries the default route and sits in the chipset's group:
    # define refuses it, and a definition written by other means is skipped by apply
    r = run("--sysfs-root", demo_root, "define", "00:1f.6", "--driver", "vfio-pci")
    assert r.exit_code == 4 and "refusing" in r.output and "default route" in r.output
    assert not (cfg(demo_root) / "devices").exists()
    from pcimgr.core.address import PciAddress
    from pcimgr.host import discovery
    from pcimgr.persist import definitions
    device = discovery.read_device(SimulatedMachine(str(demo_root)).sysfs,
                                   PciAddress.parse("00:1f.6"))
    host = discovery.scan_related(SimulatedMachine(str(demo_root)).sysfs, (device.address,))
    definitions.save(str(cfg(demo_root)), definitions.identify(host, device, driver="vfio-pci"))
    r = run("--sysfs-root", demo_root, "apply")
    assert r.exit_code == 10
    assert "skipped 0000:00:1f.6: refusing:" in r.output and "default route" in r.output
    assert "apply never forces" in r.output and "pass --force" not in r.output
    assert driver_of(demo_root, "0000:00:1f.6") == "e1000e"


@pytest.mark.parametrize("args, words", [
    (("04:00.0", "--driver", "vfio-pci", "--vfs", "2"), "not both"),
    (("04:00.0",), "nothing to define"),
    (("04:00.0", "--vfs", "2"), "not SR-IOV capable"),
    ((IGB, "--vfs", "8"), "supports 1 to 7 VFs"),
    ((IGB, "--vf", "0", "--mac", "52:54:00:5e:00:01"), "define the VF count first"),
    ((IGB, "--mac", "52:54:00:5e:00:01"), "add --vf INDEX"),
    ((IGB, "--vfs", "2", "--vf", "2", "--vlan", "5"), "indexes run from 0 to 1"),
    (("04:00.0", "--driver", "vfio pci"), "not a driver name"),
    (("09:00.0", "--driver", "vfio-pci"), "no PCI function 0000:09:00.0"),
])
def test_define_refusals(run, demo_root: Path, args, words) -> None:
    r = run("--sysfs-root", demo_root, "define", *args)
    assert r.exit_code in (2, 3) and words in r.output, r.output
    assert not (cfg(demo_root) / "devices").exists()


def test_undefine_whole_or_one_vf(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "define", IGB, "--vfs", "2").exit_code == 0
    assert run("--sysfs-root", demo_root, "define", IGB, "--vf", "1", "--vlan", "7").exit_code == 0
    r = run("--sysfs-root", demo_root, "undefine", IGB, "--vf", "1")
    assert r.exit_code == 0 and "2 VF(s) on vfio-pci" in r.output and "VF 1" not in r.output
    assert run("--sysfs-root", demo_root, "undefine", IGB).exit_code == 0
    assert os.listdir(cfg(demo_root) / "devices") == []
    assert os.listdir(cfg(demo_root) / "udev") == []
    r = run("--sysfs-root", demo_root, "undefine", IGB)
    assert r.exit_code == 3 and "has no definition" in r.output


def test_apply_of_one_device_without_definition(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "apply", "--device", "04:00.1")
    assert r.exit_code == 3 and "has no definition" in r.output


def test_apply_dry_run_changes_nothing(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "define", IGB, "--vfs", "3").exit_code == 0
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "apply", "--dry-run")
    assert r.exit_code == 0 and f"echo 3 > /sys/bus/pci/devices/{IGB}/sriov_numvfs" in r.output
    assert tree(demo_root) == before


def test_status_says_on_and_off_as_define_takes_them(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "define", "05:00.0", "--vfs", "2").exit_code == 0
    r = run("--sysfs-root", demo_root, "define", "05:00.0", "--vf", "1", "--spoofchk", "off",
            "--trust", "on")
    assert r.exit_code == 0, r.output
    r = run("--sysfs-root", demo_root, "status")
    assert "VF 1: spoofchk off, trust on: DRIFT" in r.output, r.output


def test_a_group_is_known_by_its_members_not_its_number(run, demo_root: Path) -> None:
    """The kernel numbers groups lowest-free-first: a VF recreated while another group
    took its old number comes back under another one (the lab: group 9, then 10). Same
    members, no drift, and apply applies; different members are drift. A definition from
    before members were recorded is not held to its number either."""
    vf = "0000:05:10.0"
    assert run("--sysfs-root", demo_root, "vfs", "create", "05:00.0", "1").exit_code == 0
    assert run("--sysfs-root", demo_root, "define", vf, "--driver", "vfio-pci").exit_code == 0
    edit(demo_root, vf, iommu_group=99)  # as if it had been defined under another number
    code, found = status(run, demo_root)
    assert code == 0 and found[vf]["drift"] == [], found
    assert run("--sysfs-root", demo_root, "apply").exit_code == 0
    assert driver_of(demo_root, vf) == "vfio-pci"
    edit(demo_root, vf, group_members=[vf, "0000:05:00.0"])
    code, found = status(run, demo_root)
    assert code == 10 and found[vf]["drift"] == [
        f"IOMMU group members changed: {vf} now, defined with 0000:05:00.0, {vf}"], found
    data = json.loads((cfg(demo_root) / f"devices/{vf}.json").read_text())
    del data["group_members"]
    (cfg(demo_root) / f"devices/{vf}.json").write_text(json.dumps(data))
    code, found = status(run, demo_root)
    assert code == 0 and found[vf]["drift"] == [], found


def test_one_command_undoes_what_one_command_did(run, demo_root: Path) -> None:
    """detach --group --save is undone by rebind --save; rebind alone says the definition
    stays; undefine of one port of a defined group is refused, --group takes the group
    (issue 24)."""
    pair = ("04:00.0", "04:00.1")
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group", "--save").exit_code == 0
    r = run("--sysfs-root", demo_root, "undefine", "04:00.0")
    assert r.exit_code == 4 and "undefine 0000:04:00.0 --group" in r.output
    assert len(list((cfg(demo_root) / "devices").iterdir())) == 2  # nothing half-undone
    r = run("--sysfs-root", demo_root, "rebind", *pair)
    assert r.exit_code == 0 and "still defined: `pcimgr apply` and the next boot" in r.output
    assert run("--sysfs-root", demo_root, "apply").exit_code == 0
    assert driver_of(demo_root, "0000:04:00.0") == "vfio-pci"  # as it said
    r = run("--sysfs-root", demo_root, "rebind", *pair, "--save", "--dry-run")
    assert r.exit_code == 0 and "Would remove" in r.output
    assert len(list((cfg(demo_root) / "devices").iterdir())) == 2
    r = run("--sysfs-root", demo_root, "rebind", *pair, "--save")
    assert r.exit_code == 0 and "Undefined 0000:04:00.1" in r.output
    assert list((cfg(demo_root) / "devices").iterdir()) == []
    assert [driver_of(demo_root, f"0000:{a}") for a in pair] == ["e1000e", "e1000e"]
    assert run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci",
               "--group").exit_code == 0
    r = run("--sysfs-root", demo_root, "undefine", "04:00.0", "--group")
    assert r.exit_code == 0 and "Undefined 0000:04:00.1" in r.output
    assert list((cfg(demo_root) / "devices").iterdir()) == []
