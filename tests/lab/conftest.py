"""Fixtures shared by the lab scenarios (they run inside the guest)."""

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.test_lab_kernel import E1000, by_hand_back, driver
from tests.lab.test_lab_persist import PCIMGR, PF_DIR, RULES, pcimgr


@pytest.fixture
def rules() -> Iterator[None]:
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    r = subprocess.run([PCIMGR, "install-udev"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert RULES.exists()
    yield
    RULES.unlink()
    subprocess.run(["udevadm", "control", "--reload"], check=True)
    subprocess.run(["udevadm", "settle"], check=True)
    for d in json.loads(pcimgr("status", "--json").output.split("\npcimgr:")[0]):
        pcimgr("undefine", d["address"])
    (PF_DIR / "sriov_numvfs").write_text("0")
    for address in E1000:
        if driver(address) != "e1000" or (Path("/sys/bus/pci/devices") / address /
                                          "driver_override").read_text().strip() != "(null)":
            by_hand_back(address)
