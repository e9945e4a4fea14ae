import json
from pathlib import Path

from pcimgr.host.pciids import PciIds
from tests.conftest import DATA


def test_names_from_database() -> None:
    ids = PciIds(str(DATA / "pci.ids"))
    assert ids.vendor("8086") == "Intel Corporation"
    assert ids.device("8086", "10c9") == "82576 Gigabit Network Connection"
    assert ids.device("8086", "FFFF") is None
    assert ids.vendor("dead") is None
    assert ids.class_name(0x020000) == "Ethernet controller"
    assert ids.class_name(0x02ff00) == "Network controller"  # unknown subclass: base name
    assert ids.class_name(0xfe0000) is None


def test_device_id_is_looked_up_under_its_own_vendor() -> None:
    ids = PciIds(str(DATA / "pci.ids"))
    # 1009 exists under Red Hat (virtio) but not under NVIDIA
    assert ids.device("1af4", "1009") == "Virtio filesystem"
    assert ids.device("10de", "1009") is None


def test_missing_database_falls_back_to_hex(run, demo_root: Path, monkeypatch) -> None:
    monkeypatch.setenv("PCIMGR_PCI_IDS", "/nonexistent/pci.ids")
    r = run("--sysfs-root", demo_root, "list", "--json")
    nic = next(e for e in json.loads(r.output) if e["address"] == "0000:04:00.0")
    assert nic["vendor"] is None and nic["device"] is None and nic["vendor_id"] == "8086"
    table = run("--sysfs-root", demo_root, "list").output
    assert "Ethernet controller" not in table and "[8086:105e]" in table
