"""The desktop boot (docs/lab.md): a boot display on bochs-drm with fbcon on it, systemd as
PID 1 with a stand-in display-manager.service, cpusets through systemd, the single-GPU
hand-off done by hand and undone, and libvirtd with its qemu.d hooks under systemd.

These prove the lab infrastructure the libvirt-hook hand-off is tested on; each scenario
leaves the display as it found it (display-manager running, fbcon bound, bochs-drm bound).
"""

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import libvirtd
from tests.lab import display
from tests.lab.test_lab_assign import QEMU_CONF
from tests.lab.test_lab_persist import eventually

pytestmark = [pytest.mark.lab, pytest.mark.lab_boot("desktop")]

VGA = display.VGA
DEV = display.DEVICE
DM = "display-manager.service"
HOOK_DIR = Path("/etc/libvirt/hooks/qemu.d")
HOOK_LOG = Path("/run/pcimgr-lab-hook.log")
HOOK_FAIL = Path("/run/pcimgr-lab-hook.fail")
# appends its arguments and the first line of its stdin; refuses `prepare` while HOOK_FAIL is
HOOK = f"""#!/bin/sh
stdin=$(cat)
first=$(printf '%s\\n' "$stdin" | sed -n 1p)
echo "$* | $first" >> {HOOK_LOG}
if [ "$2" = prepare ] && [ -e {HOOK_FAIL} ]; then
    echo "pcimgr-lab-hook: no GPU for $1 today" >&2
    exit 1
fi
exit 0
"""


@pytest.fixture(autouse=True, scope="module")
def desktop_boot() -> None:
    if "pcimgr.init=systemd" not in Path("/proc/cmdline").read_text():
        pytest.skip("not the desktop lab boot (lab_boot(\"desktop\"))")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert not check or r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def driver(address: str = VGA) -> str | None:
    link = Path("/sys/bus/pci/devices") / address / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def vtcons() -> dict[str, tuple[str, str]]:
    return {d.name: ((d / "name").read_text().strip(), (d / "bind").read_text().strip())
            for d in sorted(Path("/sys/class/vtconsole").iterdir())}


def fbcon_vtcon() -> str | None:
    """The vtconsole fbcon registered (the kernel numbers it: vtcon0 in this boot)."""
    return next((n for n, (name, _) in vtcons().items() if "frame buffer" in name), None)


def card() -> str | None:
    """The VGA's DRM card node while bochs-drm drives it (the kernel numbers it)."""
    drm = DEV / "drm"
    found = sorted(n.name for n in drm.iterdir() if n.name.startswith("card")) \
        if drm.exists() else []
    return f"/dev/dri/{found[0]}" if found else None


def card_exists() -> bool:
    node = card()
    return node is not None and Path(node).exists()


def holders(path: str | None = None) -> list[int]:
    """The processes with `path` (default: the VGA's card) open."""
    path = path or card()
    found: list[int] = []
    if path is None:
        return found
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == path for fd in (proc / "fd").iterdir()):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def dm_state() -> str:
    return sh("systemctl", "is-active", DM, check=False).stdout.strip()


def dm_pid() -> int:
    return int(sh("systemctl", "show", "-p", "MainPID", "--value", DM).stdout)


def desktop_as_booted() -> bool:
    vt = fbcon_vtcon()
    return (driver() == "bochs-drm" and card_exists() and dm_state() == "active"
            and vt is not None and vtcons()[vt][1] == "1")


def give_back() -> None:
    """Undo a hand-off left half done: bochs-drm, fbcon and the display manager back."""
    (DEV / "driver_override").write_text("\n")
    current = driver()
    if current not in (None, "bochs-drm"):
        Path(f"/sys/bus/pci/drivers/{current}/unbind").write_text(VGA)
    if driver() is None:
        Path("/sys/bus/pci/drivers_probe").write_text(VGA)
    vt = fbcon_vtcon()
    if vt is not None and vtcons()[vt][1] != "1":
        Path(f"/sys/class/vtconsole/{vt}/bind").write_text("1")
    sh("udevadm", "settle")
    sh("systemctl", "start", DM)


@pytest.fixture
def desktop() -> Iterator[None]:
    assert desktop_as_booted(), (driver(), vtcons(), dm_state())
    yield
    if not desktop_as_booted():
        give_back()
    assert desktop_as_booted(), (driver(), vtcons(), dm_state())


def test_display_facts_are_what_the_fixture_recorded(desktop: None) -> None:
    recorded = json.loads(display.FIXTURE.read_text())
    found = display.record()
    recorded.pop("kernel"), found.pop("kernel")
    assert found == recorded


def test_boot_display_is_on_bochs_drm_with_fbcon(desktop: None) -> None:
    assert driver() == "bochs-drm"
    assert (DEV / "boot_vga").read_text().strip() == "1"
    vt = fbcon_vtcon()
    assert vt is not None, vtcons()
    assert vtcons()[vt] == ("(M) frame buffer device", "1")
    fbs = framebuffers()
    assert len(fbs) == 1 and os.path.realpath(f"/sys/class/graphics/{fbs[0]}/device") == \
        os.path.realpath(DEV)
    node = card()
    assert node is not None and Path(node).exists()
    assert os.path.realpath(f"/sys/class/drm/{os.path.basename(node)}/device") == \
        os.path.realpath(DEV)


def test_display_manager_holds_the_card_and_stops_and_starts(desktop: None) -> None:
    assert dm_state() == "active"
    pid = dm_pid()
    assert holders() == [pid]
    sh("systemctl", "stop", DM)
    assert dm_state() == "inactive"
    assert holders() == []
    sh("systemctl", "start", DM)
    assert dm_state() == "active"
    assert holders() == [dm_pid()] and dm_pid() != pid


def test_allowed_cpus_of_system_slice_set_and_reset() -> None:
    try:
        sh("systemctl", "set-property", "--runtime", "system.slice", "AllowedCPUs=0")
        assert sh("systemctl", "show", "-p", "AllowedCPUs", "system.slice").stdout == \
            "AllowedCPUs=0\n"
        assert "cpuset" in Path("/sys/fs/cgroup/cgroup.subtree_control").read_text().split()
        assert Path("/sys/fs/cgroup/system.slice/cpuset.cpus").read_text().strip() == "0"
    finally:
        sh("systemctl", "set-property", "--runtime", "system.slice", "AllowedCPUs=")
    assert sh("systemctl", "show", "-p", "AllowedCPUs", "system.slice").stdout == "AllowedCPUs=\n"
    # nothing else asks for cpusets: systemd takes the controller off system.slice again
    assert not Path("/sys/fs/cgroup/system.slice/cpuset.cpus").exists()


def consoles() -> list[tuple[str, str]]:
    """The vtcons as (name, bind), by name: the kernel numbers them (fbcon was vtcon0 in
    this boot, having taken the number vgacon gave up; vtcon1 on an EFI desktop)."""
    return sorted(vtcons().values())


def framebuffers() -> list[str]:
    graphics = DEV / "graphics"
    return sorted(n.name for n in graphics.iterdir()) if graphics.exists() else []


FBCON, DUMMY = "(M) frame buffer device", "(M) dummy device"


def test_single_gpu_hand_off_by_hand_and_back(desktop: None) -> None:
    vt = fbcon_vtcon()
    assert vt is not None and consoles() == [(DUMMY, "0"), (FBCON, "1")], vtcons()
    sh("systemctl", "stop", DM)
    assert holders() == []
    Path(f"/sys/class/vtconsole/{vt}/bind").write_text("0")
    assert consoles() == [(DUMMY, "1"), (FBCON, "0")]  # the dummy takes the consoles
    sh("modprobe", "vfio-pci")
    (DEV / "driver_override").write_text("vfio-pci")
    (DEV / "driver" / "unbind").write_text(VGA)
    assert driver() is None
    assert card() is None and framebuffers() == []
    # with its framebuffer gone fbcon unregisters its vtconsole: only the dummy is left
    assert consoles() == [(DUMMY, "1")]
    Path("/sys/bus/pci/drivers_probe").write_text(VGA)
    assert driver() == "vfio-pci"
    group = os.path.basename(os.readlink(DEV / "iommu_group"))
    assert Path(f"/dev/vfio/{group}").exists()

    (DEV / "driver_override").write_text("\n")
    Path("/sys/bus/pci/drivers/vfio-pci/unbind").write_text(VGA)
    Path("/sys/bus/pci/drivers_probe").write_text(VGA)
    assert driver() == "bochs-drm"
    assert eventually(card_exists, 30)
    # fbcon binds itself to the new framebuffer, before anyone writes bind
    assert consoles() == [(DUMMY, "0"), (FBCON, "1")]
    again = fbcon_vtcon()
    Path(f"/sys/class/vtconsole/{again}/bind").write_text("1")  # what scripts do: no change
    assert consoles() == [(DUMMY, "0"), (FBCON, "1")]
    assert len(framebuffers()) == 1
    sh("udevadm", "settle")
    sh("systemctl", "start", DM)
    assert dm_state() == "active" and holders() == [dm_pid()]


@pytest.fixture(scope="module")
def hooked_libvirtd() -> Iterator[None]:
    """libvirtd (started by hand, as tests/libvirtd.py does) with a qemu.d hook in place
    before it starts."""
    Path("/etc/libvirt/qemu.conf").write_text(QEMU_CONF)  # the guest's overlay, not the host
    HOOK_DIR.mkdir(parents=True, exist_ok=True)
    hook = HOOK_DIR / "pcimgr-lab-hook"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    started = libvirtd.start()
    yield
    libvirtd.stop(started)
    hook.unlink()


@pytest.fixture
def domain(hooked_libvirtd: None) -> Iterator[str]:
    name = "vm-desktop"
    libvirtd.define(name, False)
    HOOK_LOG.unlink(missing_ok=True)
    yield name
    HOOK_FAIL.unlink(missing_ok=True)
    libvirtd.virsh("destroy", name)
    libvirtd.virsh("undefine", name)


def hook_calls() -> list[str]:
    """What the hook was called with: its arguments, then the first line of its stdin (the
    domain's XML) with the domain id made N."""
    lines = HOOK_LOG.read_text().splitlines() if HOOK_LOG.exists() else []
    return [re.sub(r" id='\d+'", " id='N'", line) for line in lines]


START_HOOKS = ["vm-desktop prepare begin - | <domain type='qemu' id='N'>",
               "vm-desktop start begin - | <domain type='qemu' id='N'>",
               "vm-desktop started begin - | <domain type='qemu' id='N'>"]
STOP_HOOKS = ["vm-desktop stopped end - | <domain type='qemu'>",
              "vm-desktop release end - | <domain type='qemu'>"]


def test_libvirtd_under_systemd_starts_a_domain_and_runs_the_hooks(domain: str) -> None:
    r = libvirtd.virsh("start", domain)
    assert r.returncode == 0, r.stderr
    assert libvirtd.virsh("domstate", domain).stdout.strip() == "running"
    # no D-Bus in the guest, so no systemd-machined, and QEMU_CONF's cgroup_controllers = []:
    # QEMU stays in libvirtd's cgroup, the command's unit (without that line libvirt, finding
    # no machined, made /machine/qemu-1-NAME.libvirt-qemu/{emulator,vcpu0} itself)
    pid = Path(f"/run/libvirt/qemu/{domain}.pid").read_text().strip()
    cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    started = hook_calls()
    r = libvirtd.virsh("destroy", domain)
    assert r.returncode == 0, r.stderr
    stopped = hook_calls()[len(started):]
    assert (started, stopped) == (START_HOOKS, STOP_HOOKS), repr((started, stopped))
    assert cgroup == "0::/system.slice/pcimgr-lab-command.service\n"


def test_a_failing_prepare_hook_refuses_the_start(domain: str) -> None:
    HOOK_FAIL.touch()
    r = libvirtd.virsh("start", domain)
    assert r.returncode == 1
    assert r.stderr == (
        "error: Failed to start domain 'vm-desktop'\n"
        "error: Hook script execution failed: internal error: Child process (LC_ALL=C "
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "
        "/etc/libvirt/hooks/qemu.d/pcimgr-lab-hook vm-desktop prepare begin -) unexpected "
        "exit status 1: pcimgr-lab-hook: no GPU for vm-desktop today\n\n"), repr(r.stderr)
    # nothing started, yet libvirt runs the stop and release hooks all the same
    assert hook_calls() == [START_HOOKS[0], *STOP_HOOKS]
    assert libvirtd.virsh("domstate", domain).stdout.strip() == "shut off"
