"""The libvirt-hook hand-off on the real kernel through the real libvirtd (issue 26), in the
desktop boot (docs/lab.md): pcimgr's hook installed before libvirtd starts, L2 domains
that name their functions with managed='no', and only `virsh start` and `virsh destroy`
to move them. The boot display (bochs-drm with fbcon, a display manager holding its card)
goes to the guest and comes back; so does the e1000e pair; a refusal and a failing step
stop the start with pcimgr's line and leave the host as it was; a killed prepare is undone
by `pcimgr recover`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import libvirtd
from tests.lab.test_lab_assign import QEMU_CONF, qemu_holds
from tests.lab.test_lab_desktop import (
    DM,
    VGA,
    card,
    card_exists,
    desktop_as_booted,
    dm_pid,
    dm_state,
    driver,
    fbcon_vtcon,
    give_back,
    holders,
    vtcons,
)
from tests.lab.test_lab_kernel import E1000E, by_hand_back
from tests.lab.test_lab_persist import PCIMGR

pytestmark = [pytest.mark.lab, pytest.mark.lab_boot("desktop")]

HOOK = Path("/etc/libvirt/hooks/qemu.d/pcimgr")
PROFILES = Path("/etc/pcimgr/handoff")
RECORDS = Path("/var/lib/pcimgr/handoffs")
POOL = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
REFUSE_STOP = Path(f"/run/systemd/system/{DM}.d/refuse-stop.conf")


@pytest.fixture(autouse=True, scope="module")
def desktop_boot() -> None:
    if "pcimgr.init=systemd" not in Path("/proc/cmdline").read_text():
        pytest.skip("not the desktop lab boot (lab_boot(\"desktop\"))")


def pcimgr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PCIMGR, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def hooked() -> Iterator[None]:
    """pcimgr's hook in place before libvirtd starts (libvirt reads qemu.d/ at start)."""
    Path("/etc/libvirt/qemu.conf").write_text(QEMU_CONF)  # the guest's overlay, not the host
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    r = pcimgr("hook", "install", "--program", PCIMGR)
    assert r.returncode == 0, r.stderr
    started = libvirtd.start()
    yield
    libvirtd.stop(started)
    assert pcimgr("hook", "uninstall").returncode == 0


def domain_with(name: str, addresses: tuple[str, ...]) -> str:
    """A small L2 domain that names the functions as unmanaged hostdevs: the hook moves them,
    libvirt only opens them."""
    hostdevs = "".join(
        "<hostdev mode='subsystem' type='pci' managed='no'><source><address "
        f"domain='0x{a[:4]}' bus='0x{a[5:7]}' slot='0x{a[8:10]}' function='0x{a[11]}'/>"
        "</source></hostdev>" for a in addresses)
    xml = libvirtd.domain_xml(name).replace("</devices>", hostdevs + "</devices>")
    libvirtd.virsh("destroy", name)
    libvirtd.virsh("undefine", name)
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(xml)
        f.flush()
        r = libvirtd.virsh("define", f.name)
    assert r.returncode == 0, r.stderr
    return name


@pytest.fixture
def gpu_guest(hooked: None) -> Iterator[str]:
    assert desktop_as_booted(), (driver(), vtcons(), dm_state())
    vm = domain_with("vm-gpu", (VGA,))
    r = pcimgr("handoff", "define", vm, VGA, "--framebuffer", "--stop-display-manager",
               "--hugepages", "8")
    assert r.returncode == 0, r.stdout + r.stderr
    yield vm
    libvirtd.virsh("destroy", vm)
    libvirtd.virsh("undefine", vm)
    REFUSE_STOP.unlink(missing_ok=True)
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    if not desktop_as_booted():
        pcimgr("recover")
        give_back()
    pcimgr("handoff", "undefine", vm)
    assert desktop_as_booted(), (driver(), vtcons(), dm_state())
    assert not (RECORDS / f"{vm}.json").exists()


def test_the_boot_display_goes_to_the_guest_and_comes_back(gpu_guest: str) -> None:
    vm = gpu_guest
    r = libvirtd.virsh("start", vm)
    assert r.returncode == 0, r.stderr
    assert driver() == "vfio-pci" and qemu_holds(vm, VGA)
    assert dm_state() == "inactive" and holders() == []
    assert fbcon_vtcon() is None  # fbcon let go, and went with the framebuffer
    assert POOL.read_text().strip() == "8"
    held = json.loads((RECORDS / f"{vm}.json").read_text())
    assert [s["kind"] for s in held["steps"]] == ["stop-unit", "unbind-console", "bind",
                                                  "hugepages"]
    r = libvirtd.virsh("destroy", vm)
    assert r.returncode == 0, r.stderr
    assert driver() == "bochs-drm" and card_exists()
    vt = fbcon_vtcon()
    assert vt is not None and vtcons()[vt] == ("(M) frame buffer device", "1")
    assert dm_state() == "active" and holders() == [dm_pid()]
    assert POOL.read_text().strip() == "0"
    assert not (RECORDS / f"{vm}.json").exists()


def test_a_holder_of_the_card_stops_the_start_with_pcimgrs_line(gpu_guest: str) -> None:
    vm = gpu_guest
    node = card()
    other = subprocess.Popen(["sh", "-c", f"exec sleep 600 3<{node}"])
    try:
        r = libvirtd.virsh("start", vm)
    finally:
        other.kill()
        other.wait()
    assert r.returncode == 1
    assert f"{node} of {VGA} is open by sleep[{other.pid}]" in r.stderr, r.stderr
    assert "Hook script execution failed" in r.stderr
    assert libvirtd.virsh("domstate", vm).stdout.strip() == "shut off"
    assert desktop_as_booted() and POOL.read_text().strip() == "0"


def test_a_display_manager_that_will_not_stop_is_rolled_back(gpu_guest: str) -> None:
    vm = gpu_guest
    REFUSE_STOP.parent.mkdir(parents=True, exist_ok=True)
    REFUSE_STOP.write_text("[Unit]\nRefuseManualStop=yes\n")
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    r = libvirtd.virsh("start", vm)
    assert r.returncode == 1
    assert "handoff prepare vm-gpu failed at step 1" in r.stderr, r.stderr
    assert "rolled back: the host is as it was before" in r.stderr
    assert desktop_as_booted() and not (RECORDS / f"{vm}.json").exists()


def test_a_killed_prepare_is_undone_by_recover(gpu_guest: str) -> None:
    vm = gpu_guest
    # killed (os._exit) right after its first write to drivers_probe: the display manager
    # is stopped, fbcon unbound, the card unbound from bochs-drm, vfio-pci not yet bound
    code = subprocess.run([os.path.dirname(PCIMGR) + "/python", "-c",
                           "import sys; from tests.killed import run_killed_after; "
                           "sys.exit(run_killed_after('drivers_probe', 'handoff', 'prepare', "
                           f"{vm!r}))"], cwd=Path(__file__).parents[2]).returncode
    assert code == 9
    assert dm_state() == "inactive" and driver() != "bochs-drm"
    r = pcimgr("recover")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "undid its 3 started step(s)" in r.stdout
    assert desktop_as_booted() and holders() == [dm_pid()]


@pytest.fixture
def nic_guest(hooked: None) -> Iterator[str]:
    vm = domain_with("vm-nic", E1000E)
    r = pcimgr("handoff", "define", vm, E1000E[0], "--group")
    assert r.returncode == 0, r.stdout + r.stderr
    yield vm
    libvirtd.virsh("destroy", vm)
    libvirtd.virsh("undefine", vm)
    pcimgr("handoff", "undefine", vm)
    for address in E1000E:
        if driver(address) != "e1000e":
            by_hand_back(address)


def test_the_e1000e_pair_goes_and_comes_back_without_display_steps(nic_guest: str) -> None:
    vm = nic_guest
    r = libvirtd.virsh("start", vm)
    assert r.returncode == 0, r.stderr
    assert [driver(a) for a in E1000E] == ["vfio-pci", "vfio-pci"]
    assert all(qemu_holds(vm, a) for a in E1000E)
    held = json.loads((RECORDS / f"{vm}.json").read_text())
    assert [s["kind"] for s in held["steps"]] == ["bind", "bind"]
    assert desktop_as_booted()  # the display was none of its business
    assert libvirtd.virsh("destroy", vm).returncode == 0
    assert [driver(a) for a in E1000E] == ["e1000e", "e1000e"]
    assert not (RECORDS / f"{vm}.json").exists()
