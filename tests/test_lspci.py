"""lspci reads a simulated host as it reads /sys: the tree is faithful enough for other tools."""

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("lspci") is None,
                                reason="lspci missing (scripts/run installs pciutils)")


def lspci(root: Path, *args: str) -> str:
    return subprocess.run(["lspci", "-O", f"sysfs.path={root}/bus/pci", *args],
                          capture_output=True, text=True, check=True).stdout


def test_lspci_sees_every_function_with_its_driver(demo_root: Path) -> None:
    out = lspci(demo_root, "-nnkD")
    assert out.count("\n0000:") + out.startswith("0000:") == 21
    block = out.split("0000:04:00.1 ")[1].split("\n0000:")[0]
    assert "[8086:105e]" in block and "Kernel driver in use: e1000e" in block


def test_lspci_decodes_sriov_capability_and_vf_count(demo_root: Path) -> None:
    from pcimgr.sim.machine import SimulatedMachine
    SimulatedMachine(str(demo_root)).sysfs.write_attr("bus/pci/devices/0000:05:00.0/sriov_numvfs",
                                                      "2")
    out = lspci(demo_root, "-vvv", "-s", "05:00.0")
    assert "Single Root I/O Virtualization (SR-IOV)" in out
    assert "Total VFs: 8, Number of VFs: 2" in out
    assert "VF offset: 128, stride: 2, Device ID: 10ca" in out
    assert "05:10.2" in lspci(demo_root, "-s", "05:10.2")


def test_lspci_tree_follows_bridges(demo_root: Path) -> None:
    tree = lspci(demo_root, "-t")
    assert "+-1c.0-[04]--+-00.0" in tree
