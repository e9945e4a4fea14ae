"""Fixtures shared by the lab scenarios (they run inside the guest)."""

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.test_lab_kernel import E1000, by_hand_back, driver
from tests.lab.test_lab_persist import PCIMGR, PF_DIR, RULES, pcimgr

MDEV_RULES = RULES.with_name("71-pcimgr-mdev.rules")


@pytest.fixture
def rules() -> Iterator[None]:
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    r = subprocess.run([PCIMGR, "install-udev"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert RULES.exists()
    yield
    RULES.unlink()
    MDEV_RULES.unlink()
    subprocess.run(["udevadm", "control", "--reload"], check=True)
    subprocess.run(["udevadm", "settle"], check=True)
    (PF_DIR / "sriov_numvfs").write_text("0")
    for address in E1000:
        if driver(address) != "e1000" or (Path("/sys/bus/pci/devices") / address /
                                          "driver_override").read_text().strip() != "(null)":
            by_hand_back(address)


@pytest.fixture(autouse=True)
def no_definitions_left() -> Iterator[None]:
    """Every scenario starts and ends without definitions: one left behind is drift in the
    next scenario's `status` (a group-defined member is only undefined with --group)."""
    yield
    for d in json.loads(pcimgr("status", "--json").stdout):
        if (Path("/etc/pcimgr/devices") / f"{d['address']}.json").exists():
            r = pcimgr("undefine", d["address"], "--group")
            assert r.exit_code == 0, r.output
    assert json.loads(pcimgr("status", "--json").stdout) == []
