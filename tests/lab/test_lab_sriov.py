"""vfs create/destroy/set on a real igb (82576) PF, inside the QEMU lab guest (issue 5)."""

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli.app import cli
from pcimgr.host.linux import LinuxMachine
from pcimgr.host.uevents import Watcher
from tests.killed import run_killed_after
from tests.lab.test_lab_kernel import driver

pytestmark = pytest.mark.lab

PF = "0000:01:00.0"
PF_DIR = Path("/sys/bus/pci/devices") / PF
VFS = ("0000:01:10.0", "0000:01:10.2", "0000:01:10.4")


def pcimgr(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def numvfs() -> int:
    return int((PF_DIR / "sriov_numvfs").read_text())


def autoprobe() -> str:
    return (PF_DIR / "sriov_drivers_autoprobe").read_text().strip()


def group(address: str) -> str:
    return os.path.basename(os.readlink(f"/sys/bus/pci/devices/{address}/iommu_group"))


@pytest.fixture
def clean_pf() -> Iterator[None]:
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    yield
    (PF_DIR / "sriov_numvfs").write_text("0")
    (PF_DIR / "sriov_drivers_autoprobe").write_text("1")
    subprocess.run(["rm", "-f", "/var/lib/pcimgr/journal.json"])


class NetEvents:
    """Kernel uevents of the net subsystem while a command runs: any host interface made."""

    def __init__(self) -> None:
        import pyudev
        self.monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
        self.monitor.filter_by("net")
        self.monitor.start()

    def added(self) -> list[str]:
        names = []
        while True:
            device = self.monitor.poll(timeout=0.5)
            if device is None:
                return names
            if device.action == "add":
                names.append(device.sys_name)


def test_create_for_vfio_makes_no_host_interface(clean_pf: None) -> None:
    assert Watcher(LinuxMachine()).uses_uevents  # the real host waits on kernel uevents
    events = NetEvents()
    r = pcimgr("vfs", "create", PF, "2", "--driver", "vfio-pci")
    assert r.exit_code == 0, r.output
    assert "enp1s0 (the PF) is down" in r.output  # nothing brought the lab's NIC up
    assert events.added() == []
    assert [driver(v) for v in VFS[:2]] == ["vfio-pci", "vfio-pci"]
    groups = [group(v) for v in VFS[:2]]
    assert len(set(groups)) == 2 and group(PF) not in groups
    assert all(os.path.exists(f"/dev/vfio/{g}") for g in groups)
    assert autoprobe() == "1" and numvfs() == 2
    listing = json.loads(pcimgr("vfs", "list", PF, "--json").output)[0]
    assert [v["address"] for v in listing["vfs"]] == list(VFS[:2])
    assert listing["link_up"] is False

    # a new count goes through 0, in one transaction
    r = pcimgr("vfs", "create", PF, "3")
    assert r.exit_code == 0, r.output
    assert numvfs() == 3 and [driver(v) for v in VFS] == ["vfio-pci"] * 3

    # above the maximum: refused before any write
    r = pcimgr("vfs", "create", PF, "8")
    assert r.exit_code == 2 and "at most 7 VFs under igb" in r.output
    assert numvfs() == 3

    r = pcimgr("vfs", "destroy", PF)
    assert r.exit_code == 0, r.output
    assert numvfs() == 0 and not any(os.path.exists(f"/sys/bus/pci/devices/{v}") for v in VFS)
    assert not any(os.path.exists(f"/dev/vfio/{g}") for g in groups)


def test_create_for_the_host_driver_and_set_properties(clean_pf: None) -> None:
    r = pcimgr("vfs", "create", PF, "2", "--driver", "host", "--pf-up")
    assert r.exit_code == 0, r.output
    assert "is down" not in r.output
    assert [driver(v) for v in VFS[:2]] == ["igbvf", "igbvf"]
    assert os.listdir(f"/sys/bus/pci/devices/{VFS[0]}/net")  # igbvf made an interface
    r = pcimgr("vfs", "set", PF, "1", "--mac", "52:54:00:aa:bb:01", "--vlan", "10",
               "--qos", "3", "--trust", "on")
    assert r.exit_code == 0, r.output
    shown = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show", "enp1s0"],
                                      capture_output=True, text=True, check=True).stdout)
    vf = shown[0]["vfinfo_list"][1]
    assert vf["address"] == "52:54:00:aa:bb:01" and vf["trust"] is True
    assert vf["vlan_list"] == [{"vlan": 10, "qos": 3}]
    r = pcimgr("vfs", "set", PF, "0", "--state", "enable")
    assert r.exit_code == 7 and "the PF driver does not support it" in r.output
    subprocess.run(["ip", "link", "set", "enp1s0", "down"], check=True)


HOLD_DEVICE_OPEN = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
group = os.open("/dev/vfio/" + sys.argv[2], os.O_RDWR)
container = os.open("/dev/vfio/vfio", os.O_RDWR)
assert libc.ioctl(group, 0x3B68, ctypes.byref(ctypes.c_int(container))) == 0  # SET_CONTAINER
assert libc.ioctl(container, 0x3B66, ctypes.c_ulong(1)) == 0                 # SET_IOMMU type1
device = libc.ioctl(group, 0x3B6A, ctypes.c_char_p(sys.argv[1].encode()))     # GET_DEVICE_FD
assert device >= 0, ctypes.get_errno()
print("holding", flush=True)
time.sleep(600)
"""


def test_destroy_refused_while_a_vf_device_is_open(clean_pf: None) -> None:
    assert pcimgr("vfs", "create", PF, "2").exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLD_DEVICE_OPEN, VFS[1], group(VFS[1])],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        result: list[Result] = []
        t = threading.Thread(target=lambda: result.append(pcimgr("vfs", "destroy", PF)),
                             daemon=True)
        t.start()
        t.join(120)
        assert result, "vfs destroy hung on a held VF"
        r = result[0]
        assert r.exit_code == 4, r.output
        assert f"{VFS[1]} (IOMMU group {group(VFS[1])}, /dev/vfio/{group(VFS[1])} open by " \
            in r.output and f"[{holder.pid}])" in r.output
        assert numvfs() == 2
    finally:
        holder.kill()
        holder.wait()
    assert pcimgr("vfs", "destroy", PF).exit_code == 0
    assert numvfs() == 0


WAIT_FOR_BIND = """
import json, sys, threading, time
from pathlib import Path
from pcimgr.host import uevents
from pcimgr.host.linux import LinuxMachine
vf = sys.argv[1]
woken_by = []
real_monitor = uevents._kernel_monitor

class Recording:
    # the real monitor, noting the events that end its polls; the bind starts only once
    # the wait polls, so it cannot be over before the wait begins
    def __init__(self):
        self.monitor = real_monitor()
        self.timer = threading.Timer(0.2, lambda: Path(
            "/sys/bus/pci/drivers/vfio-pci/bind").write_text(vf))

    def poll(self, timeout):
        if not self.timer.is_alive() and not self.timer.finished.is_set():
            self.timer.start()
        started = time.monotonic()
        device = self.monitor.poll(timeout=timeout)
        # an event ended the poll long before its timeout (pyudev gives None for one its
        # filter drops, such as the vfio "add" of /dev/vfio/N that comes first)
        if time.monotonic() - started < timeout / 2:
            woken_by.append(f"{device.action} {device.sys_name}" if device else "filtered")
        return device

uevents._kernel_monitor = Recording
uevents.EVENT_SLICE = 1000.0  # only an event ends a poll, never a periodic re-check
link = Path("/sys/bus/pci/devices") / vf / "driver"
with uevents.Watcher(LinuxMachine()) as w:
    ok = w.wait(lambda: link.exists() and link.resolve().name == "vfio-pci", 60.0)
print(json.dumps({"ok": ok, "woken_by": woken_by}))
"""


def test_a_wait_is_woken_by_the_kernel_uevent(clean_pf: None) -> None:
    # in a process of its own, as every pcimgr run is
    assert pcimgr("vfs", "create", PF, "1").exit_code == 0
    (Path("/sys/bus/pci/drivers/vfio-pci/unbind")).write_text(VFS[0])  # override stays
    r = subprocess.run([sys.executable, "-c", WAIT_FOR_BIND, VFS[0]], capture_output=True,
                       text=True, timeout=120)
    result = json.loads(r.stdout)
    assert result["ok"] and result["woken_by"], (result, r.stderr)


def test_killed_create_is_undone_by_the_next_run(clean_pf: None) -> None:
    assert run_killed_after("sriov_numvfs", "vfs", "create", PF, "2") == 9
    assert numvfs() == 2 and autoprobe() == "0"
    assert [driver(v) for v in VFS[:2]] == [None, None]  # autoprobe off: nobody probed them
    r = pcimgr("vfs", "destroy", PF)
    assert "found an unfinished `vfs create" in r.output, r.output
    assert numvfs() == 0 and autoprobe() == "1"
    assert not os.path.exists("/var/lib/pcimgr/journal.json")
