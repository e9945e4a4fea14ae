"""Mediated devices on the real kernel (issue 25), inside the QEMU lab guest, with the
kernel's mtty sample (built by tests/lab/mdev_samples.py from Debian's linux-source):
types as the kernel counts them, create/remove, exhaustion refused, a kill undone, Debian
12's mdevctl 1.2.0 and pcimgr reading each other's definitions, autostart with Debian's
broken rule, with doctor's repair and with pcimgr's own rule alone, and an L2 guest
holding its mdev."""

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli.app import cli
from tests import libvirtd
from tests.killed import run_killed_after
from tests.lab import mdev_samples, test_lab_assign
from tests.lab.test_lab_persist import PCIMGR, eventually

pytestmark = pytest.mark.lab

U1 = "5eed0000-0000-4000-8000-000000000001"
U2 = "5eed0000-0000-4000-8000-000000000002"
DEVICES = Path("/sys/bus/mdev/devices")
TYPES = Path("/sys/class/mdev_bus/mtty/mdev_supported_types")
MDEVCTL_D = Path("/etc/mdevctl.d")
DEBIAN_RULE = Path("/lib/udev/rules.d/60-mdevctl.rules")
OVERRIDE = Path("/etc/udev/rules.d/60-mdevctl.rules")
OUR_RULES = (Path("/etc/udev/rules.d/70-pcimgr.rules"),
             Path("/etc/udev/rules.d/71-pcimgr-mdev.rules"))
guest_libvirtd, domains = test_lab_assign.guest_libvirtd, test_lab_assign.domains


def pcimgr(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def mdevctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mdevctl", *args], capture_output=True, text=True, timeout=60)


def available() -> dict[str, int]:
    return {t: int((TYPES / t / "available_instances").read_text()) for t in os.listdir(TYPES)}


def group(uuid: str) -> str:
    return os.path.basename(os.readlink(DEVICES / uuid / "iommu_group"))


def settle() -> None:
    subprocess.run(["udevadm", "settle", "--timeout=60"], check=True)


def reload_mtty(directory: Path) -> None:
    """The parent goes and comes back: its add and MDEV_STATE=registered events."""
    mdev_samples.unload()
    settle()
    mdev_samples.load(directory)
    settle()


@pytest.fixture
def mtty() -> Iterator[Path]:
    directory, why = mdev_samples.in_guest()
    if directory is None:
        pytest.skip(why)
    mdev_samples.load(directory)
    yield directory
    for uuid in os.listdir(DEVICES) if DEVICES.exists() else ():
        (DEVICES / uuid / "remove").write_text("1")
    mdev_samples.unload()
    shutil.rmtree(MDEVCTL_D, ignore_errors=True)
    for path in (OVERRIDE, DEBIAN_RULE, Path("/usr/bin/mdevctl"), *OUR_RULES):
        path.unlink(missing_ok=True)
    subprocess.run(["udevadm", "control", "--reload"], check=True)
    subprocess.run(["rm", "-f", "/var/lib/pcimgr/journal.json"])


def install_debian_mdevctl(directory: Path) -> None:
    """Debian's package as it installs itself (unpacked on the host, never installed there)."""
    package = directory.parent / "mdevctl"
    shutil.copy(package / "usr/bin/mdevctl", "/usr/bin/mdevctl")
    DEBIAN_RULE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(package / "lib/udev/rules.d/60-mdevctl.rules", DEBIAN_RULE)
    # with its /etc/mdevctl.d/scripts.d/{callouts,notifiers}: without them mdevctl 1.2.0
    # refuses every command ("Required directory ... doesn't exist")
    shutil.copytree(package / "etc/mdevctl.d", MDEVCTL_D, dirs_exist_ok=True)
    subprocess.run(["udevadm", "control", "--reload"], check=True)


def test_types_create_exhaustion_remove_on_the_real_kernel(mtty: Path) -> None:
    r = pcimgr("mdev", "types", "mtty", "--json")
    assert r.exit_code == 0, r.output
    (parent,) = json.loads(r.stdout)
    assert {t["type"]: (t["name"], t["device_api"], t["available_instances"])
            for t in parent["types"]} == {"mtty-1": ("Single port serial", "vfio-pci", 24),
                                          "mtty-2": ("Dual port serial", "vfio-pci", 12)}
    r = pcimgr("mdev", "create", "mtty", "mtty-2", "--uuid", U1)
    assert r.exit_code == 0, r.output
    assert os.path.realpath(DEVICES / U1) == f"/sys/devices/virtual/mtty/mtty/{U1}"
    assert os.path.exists(f"/dev/vfio/{group(U1)}")
    assert available() == {"mtty-1": 22, "mtty-2": 11}
    for _ in range(11):  # the other 22 ports
        assert pcimgr("mdev", "create", "mtty", "mtty-2").exit_code == 0
    assert available() == {"mtty-1": 0, "mtty-2": 0}
    refused = pcimgr("mdev", "create", "mtty", "mtty-1", "--uuid", U2)
    assert refused.exit_code == 4 and "has 0 instance(s) of mtty-1 left" in refused.output
    assert not (DEVICES / U2).exists()
    listed = json.loads(pcimgr("mdev", "list", "--json").stdout)
    assert len(listed) == 12 and {m["driver"] for m in listed} == {"mtty"}
    for m in listed:
        r = pcimgr("mdev", "remove", m["uuid"])
        assert r.exit_code == 0, r.output
    assert os.listdir(DEVICES) == [] and available() == {"mtty-1": 24, "mtty-2": 12}


def test_a_create_killed_after_its_write_is_undone(mtty: Path) -> None:
    code = run_killed_after("/create", "mdev", "create", "mtty", "mtty-2", "--uuid", U1)
    assert code == 9 and (DEVICES / U1).exists()
    r = subprocess.run([PCIMGR, "recover"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (DEVICES / U1).exists() and available() == {"mtty-1": 24, "mtty-2": 12}


def test_mdevctl_and_pcimgr_read_each_others_definitions(mtty: Path) -> None:
    install_debian_mdevctl(mtty)
    r = pcimgr("mdev", "define", "mtty", "mtty-2", "--uuid", U1, "--auto")
    assert r.exit_code == 0, r.output
    theirs = json.loads(mdevctl("list", "--defined", "--dumpjson").stdout)
    assert theirs == [{"mtty": [{U1: {"mdev_type": "mtty-2", "start": "auto", "attrs": []}}]}]
    made = mdevctl("define", "--uuid", U2, "--parent", "mtty", "--type", "mtty-1")
    assert made.returncode == 0, made.stderr
    ours = json.loads(pcimgr("mdev", "list", "--defined", "--json").stdout)
    assert {(d["uuid"], d["type"], d["start"], d["state"]) for d in ours} == {
        (U1, "mtty-2", "auto", "stopped"), (U2, "mtty-1", "manual", "stopped")}
    # started by mdevctl, seen and removed by pcimgr; started by pcimgr, seen by mdevctl
    assert mdevctl("start", "--uuid", U2).returncode == 0
    assert [m["uuid"] for m in json.loads(pcimgr("mdev", "list", "--json").stdout)] == [U2]
    assert pcimgr("mdev", "start", U1).exit_code == 0
    active = json.loads(mdevctl("list", "--dumpjson").stdout)
    assert sorted(u for parent in active for d in parent["mtty"] for u in d) == [U1, U2]
    assert pcimgr("mdev", "remove", U2).exit_code == 0
    assert pcimgr("mdev", "undefine", U2).exit_code == 0
    assert U2 not in mdevctl("list", "--defined").stdout


def test_autostart_debian_rule_then_repaired_then_pcimgr_alone(mtty: Path) -> None:
    install_debian_mdevctl(mtty)
    assert pcimgr("mdev", "define", "mtty", "mtty-2", "--uuid", U1, "--auto").exit_code == 0
    reload_mtty(mtty)
    # Debian 12's bug: the rule runs /usr/sbin/mdevctl; nothing starts the auto mdev
    assert not eventually(lambda: (DEVICES / U1).exists(), 15)
    checks = {c["name"]: c for c in json.loads(pcimgr("doctor", "--json").stdout)["checks"]}
    assert checks["mdev-autostart"]["status"] == "warn"
    assert "/usr/sbin/mdevctl, which is not there (mdevctl is /usr/bin/mdevctl)" in \
        checks["mdev-autostart"]["detail"]

    # doctor --fix's repair (its other parts, the bootloader and the initramfs, are
    # proven elsewhere and would rebuild this guest's initramfs under TCG)
    from pcimgr.advice import edits, mdevctl_rule
    from pcimgr.host.linux import LinuxMachine
    machine = LinuxMachine()
    part = mdevctl_rule.plan(machine)
    assert [e.rel for e in part.edits] == ["etc/udev/rules.d/60-mdevctl.rules"]
    edits.apply(machine, part.edits, part.commands, print)
    assert "/usr/bin/mdevctl start-parent-mdevs" in OVERRIDE.read_text()
    reload_mtty(mtty)
    assert eventually(lambda: (DEVICES / U1).exists(), 60), "mdevctl did not start it"
    checks = {c["name"]: c for c in json.loads(pcimgr("doctor", "--json").stdout)["checks"]}
    assert checks["mdev-autostart"]["status"] == "pass"

    # without mdevctl at all: pcimgr's own rule starts it
    for path in (OVERRIDE, DEBIAN_RULE, Path("/usr/bin/mdevctl")):
        path.unlink()
    r = subprocess.run([PCIMGR, "install-udev"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    subprocess.run(["udevadm", "control", "--reload"], check=True)
    assert pcimgr("mdev", "remove", U1).exit_code == 0
    reload_mtty(mtty)
    assert eventually(lambda: (DEVICES / U1).exists(), 90), "pcimgr's rule did not start it"
    assert os.path.basename(os.readlink(DEVICES / U1 / "mdev_type")) == "mtty-2"


def test_a_running_guest_holds_its_mdev(mtty: Path, domains) -> None:
    vm = domains("mdevvm", False)
    assert pcimgr("mdev", "create", "mtty", "mtty-1", "--uuid", U1).exit_code == 0
    r = pcimgr("assign", U1, vm, "--config")
    assert r.exit_code == 0, r.output
    started = libvirtd.virsh("start", vm)
    assert started.returncode == 0, started.stderr
    pid = int(Path(f"/run/libvirt/qemu/{vm}.pid").read_text())
    fds = Path(f"/proc/{pid}/fd")
    assert any(os.readlink(fd) == f"/dev/vfio/{group(U1)}" for fd in fds.iterdir())
    listed = json.loads(pcimgr("mdev", "list", "--json").stdout)
    assert listed[0]["guests"] == [vm]
    assert any(h.startswith("qemu") for h in listed[0]["held_by"]), listed
    refused = pcimgr("mdev", "remove", U1)
    assert refused.exit_code == 4 and f"assigned to guests: {U1} ({vm})" in refused.output
    assert (DEVICES / U1).exists()
    assert libvirtd.virsh("destroy", vm).returncode == 0
    released = pcimgr("release", U1)
    assert released.exit_code == 0, released.output
    assert pcimgr("mdev", "remove", U1).exit_code == 0
    assert not (DEVICES / U1).exists()


def test_remove_is_refused_while_a_process_holds_the_group(mtty: Path) -> None:
    assert pcimgr("mdev", "create", "mtty", "mtty-2", "--uuid", U1).exit_code == 0
    holder = subprocess.Popen(["python3", "-c", f"f = open('/dev/vfio/{group(U1)}'); "
                               "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert eventually(lambda: any(
            os.readlink(fd) == f"/dev/vfio/{group(U1)}"
            for fd in Path(f"/proc/{holder.pid}/fd").iterdir()), 30)
        refused = pcimgr("mdev", "remove", U1)
        assert refused.exit_code == 4, refused.output
        assert f"open by python3[{holder.pid}]" in refused.output
        assert (DEVICES / U1).exists()
    finally:
        holder.communicate(b"")
    assert pcimgr("mdev", "remove", U1).exit_code == 0
