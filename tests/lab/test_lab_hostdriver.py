"""detach/rebind on the real kernel (issue 4 scenarios), inside the QEMU lab guest."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli.app import cli
from tests.killed import run_killed_after
from tests.lab.test_lab_kernel import E1000, E1000E, by_hand_back, driver

pytestmark = pytest.mark.lab


def pcimgr(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def netdevs(address: str) -> list[str]:
    path = Path("/sys/bus/pci/devices") / address / "net"
    return sorted(os.listdir(path)) if path.is_dir() else []


def override(address: str) -> str:
    return (Path("/sys/bus/pci/devices") / address / "driver_override").read_text().strip()


@pytest.fixture
def restore() -> Iterator[None]:
    yield
    subprocess.run(["ip", "route", "flush", "table", "main"], capture_output=True)
    for address in E1000E:
        subprocess.run(["ip", "addr", "flush", "dev", netdevs(address)[0]]
                       if netdevs(address) else ["true"], capture_output=True)
    for address in E1000 + E1000E:
        if driver(address) != ("e1000" if address in E1000 else "e1000e"):
            by_hand_back(address)


def test_detach_group_rebind_round_trip(restore: None) -> None:
    names = [netdevs(a) for a in E1000]
    r = pcimgr("detach", E1000[0])
    assert r.exit_code == 4 and "--group" in r.output
    assert [driver(a) for a in E1000] == ["e1000", "e1000"]

    r = pcimgr("detach", E1000[0], "--group", "--dry-run")
    assert r.exit_code == 0 and f"echo {E1000[1]} > /sys/bus/pci/drivers/e1000/unbind" in r.output
    assert [driver(a) for a in E1000] == ["e1000", "e1000"]

    r = pcimgr("detach", E1000[0], "--group")
    assert r.exit_code == 0, r.output
    assert [driver(a) for a in E1000] == ["vfio-pci", "vfio-pci"]  # modprobe'd by pcimgr
    group = os.path.basename(os.readlink(f"/sys/bus/pci/devices/{E1000[0]}/iommu_group"))
    assert os.path.exists(f"/dev/vfio/{group}")
    assert "Nothing to do." in pcimgr("detach", E1000[0], "--group").output

    r = pcimgr("rebind", *E1000)
    assert r.exit_code == 0, r.output
    assert [driver(a) for a in E1000] == ["e1000", "e1000"]
    assert [override(a) for a in E1000] == ["(null)", "(null)"]
    assert [netdevs(a) for a in E1000] == names
    assert not os.path.exists(f"/dev/vfio/{group}")


def test_nic_with_address_and_default_route_is_refused(restore: None) -> None:
    ifname = netdevs(E1000E[0])[0]
    for cmd in (["ip", "link", "set", ifname, "up"],
                ["ip", "addr", "add", "192.0.2.5/24", "dev", ifname],
                ["ip", "route", "add", "default", "dev", ifname]):
        subprocess.run(cmd, check=True)
    r = pcimgr("detach", E1000E[0], "--group")
    assert r.exit_code == 4, r.output
    assert f"interface {ifname} has address 192.0.2.5/24" in r.output
    assert f"interface {ifname} carries the default route" in r.output
    assert [driver(a) for a in E1000E] == ["e1000e", "e1000e"]
    r = pcimgr("detach", E1000E[0], "--group", "--force")
    assert r.exit_code == 0, r.output
    assert [driver(a) for a in E1000E] == ["vfio-pci", "vfio-pci"]
    assert pcimgr("rebind", *E1000E).exit_code == 0
    assert [driver(a) for a in E1000E] == ["e1000e", "e1000e"]


def test_killed_detach_is_undone_by_the_next_run(restore: None) -> None:
    assert run_killed_after("", "detach", E1000[0], "--group") == 9  # after the first write
    assert os.path.exists("/var/lib/pcimgr/journal.json")
    r = pcimgr("rebind", E1000[0])
    assert "found an unfinished" in r.output, r.output
    assert [driver(a) for a in E1000] == ["e1000", "e1000"]
    assert [override(a) for a in E1000] == ["(null)", "(null)"]


def test_chipset_sata_is_refused() -> None:
    r = pcimgr("detach", "00:1f.2", "--group")
    assert r.exit_code == 4 and "chipset" in r.output, r.output
    assert driver("0000:00:1f.2") == "ahci"
