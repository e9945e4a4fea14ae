"""Host insight on the real kernel (issue 16): the capabilities pcimgr reads agree with the
recorded fixture and with lspci -vvv; why the e1000 pair shares a group; what a reset of
the first e1000 would hit; a VF on vfio-pci reset through pcimgr."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli.app import cli
from pcimgr.core import configspace
from tests.lab import capabilities
from tests.lab.test_lab_kernel import E1000, driver

pytestmark = pytest.mark.lab

PF = "0000:01:00.0"
PF_DIR = Path("/sys/bus/pci/devices") / PF


def pcimgr(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def two_vfs() -> None:
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    (PF_DIR / "sriov_numvfs").write_text("0")
    (PF_DIR / "sriov_numvfs").write_text("2")
    yield
    for vf in ("0000:01:10.0", "0000:01:10.2"):
        if driver(vf) == "vfio-pci":
            pcimgr("rebind", vf)
    (PF_DIR / "sriov_numvfs").write_text("0")


def test_capabilities_are_what_the_fixture_recorded(two_vfs: None) -> None:
    recorded = json.loads(capabilities.FIXTURE.read_text())["functions"]
    assert capabilities.record("/sys") == recorded


def _lspci_blocks() -> dict[str, str]:
    out = subprocess.run(["lspci", "-vvv", "-D"], capture_output=True, text=True,
                         check=True).stdout
    blocks: dict[str, str] = {}
    for block in out.split("\n\n"):
        if block.strip():
            blocks[block.split()[0]] = block
    return blocks


def test_configspace_reading_agrees_with_lspci(two_vfs: None) -> None:
    """ACS capability and control bits, FLR and the link status as lspci decodes them."""
    checked = 0
    for address, block in _lspci_blocks().items():
        cs = configspace.parse((Path("/sys/bus/pci/devices") / address / "config").read_bytes())
        acs_cap = re.search(r"ACSCap:\s+(.*)", block)
        if acs_cap:
            acs_ctl = re.search(r"ACSCtl:\s+(.*)", block)
            assert cs.acs is not None and acs_ctl is not None, address
            for bit, name in configspace.ACS_NAMES.items():
                assert (f"{name}+" in acs_cap[1]) == bool(cs.acs.capability & bit), (address, name)
                assert (f"{name}+" in acs_ctl[1]) == bool(cs.acs.control & bit), (address, name)
            checked += 1
        else:
            assert cs.acs is None, address
        devcap = re.search(r"DevCap:.*\n\s+.*FLReset([+-])", block)
        if devcap:
            assert cs.flr == (devcap[1] == "+") or cs.flr, address  # AF FLR counts too
        status = re.search(r"LnkSta:\s+Speed ([0-9.]+)GT/s[^,]*, Width x(\d+)", block)
        if status and cs.port_type not in ("integrated-endpoint", None):
            assert cs.link_current == (float(status[1]), int(status[2])), address
    assert checked == 2  # the two QEMU root ports


def test_why_the_e1000_pair_shares_a_group() -> None:
    r = pcimgr("groups", "--why", "--json")
    assert r.exit_code == 0, r.output
    group = next(g for g in json.loads(r.stdout) if any(
        m["address"] == E1000[0] for m in g["members"]))
    assert group["why"][0].startswith("0000:00:04.0 is a conventional PCI bridge (PCIe-to-PCI)")
    e1000e = next(g for g in json.loads(r.stdout) if any(
        m["address"] == "0000:03:00.0" for m in g["members"]))
    assert "multifunction device without ACS" in e1000e["why"][0]


def test_the_first_e1000s_bus_reset_would_hit_its_mate() -> None:
    """Linux gave the first e1000 "bus" when it enumerated it alone on its bus; the reset
    it names now hits the second one too, and show says so."""
    r = pcimgr("show", E1000[0], "--json")
    reset = json.loads(r.stdout)["reset"]
    assert reset == {"methods": ["bus"], "function_level": False,
                     "bus_collateral": [E1000[1]]}


def test_a_vf_on_vfio_pci_is_reset(two_vfs: None) -> None:
    vf = "0000:01:10.0"
    assert pcimgr("detach", vf).exit_code == 0
    r = pcimgr("reset", vf)
    assert r.exit_code == 0, r.output
    assert driver(vf) == "vfio-pci"
    r = pcimgr("history", "--json")
    assert json.loads(r.stdout)[0]["command"] == f"reset {vf}"
    # the PF: its VFs would be reset with it
    r = pcimgr("reset", PF)
    assert r.exit_code == 4 and "has 2 VF(s)" in r.output, r.output
