"""Scenarios that only a real kernel can prove. They run inside the QEMU lab guest
(tests/lab/harness.py) as root; outside it each reports its in-guest result."""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pcimgr.cli.app import cli
from pcimgr.host.sysfs import Sysfs
from tests.lab import conformance

pytestmark = pytest.mark.lab

SYS = Path("/sys/bus/pci")
E1000 = ("0000:02:01.0", "0000:02:02.0")
E1000E = ("0000:03:00.0", "0000:03:00.1")


def pcimgr_json(*args: str) -> list | dict:
    r = CliRunner().invoke(cli, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def driver(address: str) -> str | None:
    link = SYS / "devices" / address / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def by_hand(address: str, override: str) -> None:
    """The administrator's echo sequence: override, unbind, reprobe."""
    (SYS / "devices" / address / "driver_override").write_text(override)
    current = driver(address)
    if current:
        (SYS / "drivers" / current / "unbind").write_text(address)
    (SYS / "drivers_probe").write_text(address)


def by_hand_to_vfio(address: str) -> None:
    by_hand(address, "vfio-pci")


def by_hand_back(address: str) -> None:
    by_hand(address, "\n")  # an empty write would not clear the override


@pytest.fixture
def vfio_loaded() -> Iterator[None]:
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    yield
    for address in E1000 + E1000E:
        if driver(address) != ("e1000" if address in E1000 else "e1000e"):
            by_hand_back(address)


def test_list_agrees_with_lspci_and_iommu_groups() -> None:
    # as a user runs it: a separate process
    out = subprocess.run([sys.executable, "-m", "pcimgr", "list", "--all", "--json"],
                         capture_output=True, text=True, check=True).stdout
    listed = {e["address"]: e for e in json.loads(out)}
    lspci = subprocess.run(["lspci", "-nnkD"], capture_output=True, text=True, check=True).stdout
    seen: dict[str, tuple[str, str, str | None]] = {}
    for block in re.split(r"\n(?=\S)", lspci.strip()):
        m = re.match(r"(\S+) .*\[([0-9a-f]{4}):([0-9a-f]{4})\]", block)
        assert m, block
        d = re.search(r"Kernel driver in use: (\S+)", block)
        seen[m[1]] = (m[2], m[3], d[1] if d else None)
    assert {a: (e["vendor_id"], e["device_id"], e["driver"]) for a, e in listed.items()} == seen
    groups = {dev: int(g) for g in os.listdir("/sys/kernel/iommu_groups")
              for dev in os.listdir(f"/sys/kernel/iommu_groups/{g}/devices")}
    assert {a: e["iommu_group"] for a, e in listed.items()} == groups


def test_lab_profile_describes_this_guest(tmp_path: Path) -> None:
    """The `lab` simulated host must stay the same machine as the real guest."""
    from pcimgr.sim import builder, profiles
    builder.build(str(tmp_path / "sim"), profiles.get("lab"))
    real = pcimgr_json("list", "--all")
    sim = pcimgr_json("--sysfs-root", str(tmp_path / "sim"), "list", "--all")
    ignore = {"numa_node",  # the lab guest has no NUMA; the profile says -1 too, kept for clarity
              # names: the guest's from its udev database, whose hwdb adds the subsystem's
              # name ("... (QEMU Virtual Machine)"); a simulated host's from pci.ids
              "vendor", "device", "class_name"}
    assert [{k: v for k, v in e.items() if k not in ignore} for e in real] == \
           [{k: v for k, v in e.items() if k not in ignore} for e in sim]


def test_groups_shared_and_viability_follows_binding(vfio_loaded: None) -> None:
    groups = {g["group"]: g for g in pcimgr_json("groups")}
    e1000_group = next(g for g in groups.values()
                       if {m["address"] for m in g["members"]} >= set(E1000))
    assert {m["address"] for m in e1000_group["members"]} == {"0000:00:04.0", *E1000}
    pair_group = next(g for g in groups.values()
                      if {m["address"] for m in g["members"]} == set(E1000E))
    assert pair_group["viable"] is False and pair_group["blockers"] == list(E1000E)
    assert e1000_group["viable"] is False and e1000_group["blockers"] == list(E1000)
    n = e1000_group["group"]

    by_hand_to_vfio(E1000[0])
    g = next(g for g in pcimgr_json("groups") if g["group"] == n)
    assert (driver(E1000[0]), g["viable"], g["blockers"]) == ("vfio-pci", False, [E1000[1]])
    by_hand_to_vfio(E1000[1])
    g = next(g for g in pcimgr_json("groups") if g["group"] == n)
    assert (g["viable"], g["blockers"]) == (True, [])  # the bridge without driver does not block
    assert os.path.exists(f"/dev/vfio/{n}")
    by_hand_back(E1000[0])
    by_hand_back(E1000[1])
    assert [driver(a) for a in E1000] == ["e1000", "e1000"]
    assert not os.path.exists(f"/dev/vfio/{n}")


def test_conformance_sequence_matches_the_recorded_answers(vfio_loaded: None) -> None:
    observed = conformance.run_sequence(Sysfs("/sys"))
    recorded = conformance.load_fixture()
    for step, (real, expected) in enumerate(zip(observed, recorded["observations"],
                                                strict=True)):
        assert real == expected, (
            f"step {step} {real['write']}: this kernel ({os.uname().release}) differs from "
            f"the fixture's ({recorded['kernel']}); refresh with python -m tests.lab.refresh")
