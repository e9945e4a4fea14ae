"""Names: the udev database's record of each function first, pci.ids for what it lacks."""

import json
from pathlib import Path

import pytest

from pcimgr.core.address import PciAddress
from pcimgr.host import discovery
from pcimgr.host.names import Namer
from pcimgr.host.udevdb import UdevDatabase
from pcimgr.sim.machine import SimulatedMachine

NIC = "0000:04:00.0"
RECORD = ("I:2345678\n"
          "E:ID_PCI_CLASS_FROM_DATABASE=Network controller\n"
          "E:ID_PCI_SUBCLASS_FROM_DATABASE=Ethernet controller\n"
          "E:ID_VENDOR_FROM_DATABASE=Intel Corporation (from udev)\n"
          "E:ID_MODEL_FROM_DATABASE=82571EB Gigabit Ethernet Controller (PRO/1000 PT Dual Port "
          "Server Adapter)\n"
          "G:systemd\n")


def lay_out(root: Path, address: str, record: str) -> None:
    data = root / "run/udev/data"
    data.mkdir(parents=True, exist_ok=True)
    (data / f"+pci:{address}").write_text(record)


def by_address(output: str) -> dict[str, dict]:
    return {d["address"]: d for d in json.loads(output)}


def test_a_simulated_host_without_a_database_names_from_pci_ids(demo_root: Path) -> None:
    assert SimulatedMachine(str(demo_root)).udev_database() is None


def test_names_from_the_udev_record_where_there_is_one(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    before = by_address(run("--sysfs-root", demo_root, "list", "--all", "--json").output)
    lay_out(demo_root, NIC, RECORD)
    after = by_address(run("--sysfs-root", demo_root, "list", "--all", "--json").output)
    nic = after[NIC]
    assert nic["vendor"] == "Intel Corporation (from udev)"
    assert nic["device"] == ("82571EB Gigabit Ethernet Controller (PRO/1000 PT Dual Port "
                             "Server Adapter)")
    assert nic["class_name"] == "Ethernet controller"
    # every other function has no record: pci.ids, as before
    assert {a: d for a, d in after.items() if a != NIC} == \
        {a: d for a, d in before.items() if a != NIC}
    assert "PRO/1000 PT Dual Port" in run("--sysfs-root", demo_root, "list", "--wide").output


def test_what_a_record_lacks_comes_from_pci_ids(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    before = by_address(run("--sysfs-root", demo_root, "list", "--all", "--json").output)[NIC]
    lay_out(demo_root, NIC, "I:1\nE:ID_VENDOR_FROM_DATABASE=Intel (udev)\nE:ID_PATH=pci-x\n")
    nic = by_address(run("--sysfs-root", demo_root, "list", "--all", "--json").output)[NIC]
    assert nic["vendor"] == "Intel (udev)"
    assert (nic["device"], nic["class_name"]) == (before["device"], before["class_name"])


class NoPciIds:
    def __getattr__(self, name: str) -> None:
        raise AssertionError("pci.ids read although udev named the function")


def test_pci_ids_not_read_when_udev_names_everything(demo_root: Path) -> None:
    lay_out(demo_root, NIC, RECORD)
    machine = SimulatedMachine(str(demo_root))
    udev = machine.udev_database()
    assert isinstance(udev, UdevDatabase)
    namer = Namer(NoPciIds(), udev)  # type: ignore[arg-type]
    device = discovery.require(machine.sysfs, PciAddress.parse(NIC))
    assert namer(device).device is not None and namer(device) is namer(device)


def test_a_record_linked_out_of_the_tree_is_refused(demo_root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (demo_root / "run/udev").mkdir(parents=True)
    (demo_root / "run/udev/data").symlink_to(elsewhere)
    from pcimgr.core.errors import Refused
    with pytest.raises(Refused):
        SimulatedMachine(str(demo_root)).udev_database()


def test_the_linux_host_asks_udev_only_for_its_own_bus(tmp_path: Path) -> None:
    from pcimgr.host.linux import LinuxMachine
    lay_out(tmp_path, NIC, RECORD)  # even with a database where the tree is
    assert LinuxMachine(str(tmp_path)).udev_database() is None
