"""Definitions applied by udev on the real kernel, status drift and doctor (issue 7), in the lab."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli.app import cli
from tests.lab.test_lab_kernel import E1000, E1000E, driver

pytestmark = pytest.mark.lab

PF = "0000:01:00.0"
PF_DIR = Path("/sys/bus/pci/devices") / PF
RULES = Path("/etc/udev/rules.d/70-pcimgr.rules")
PCIMGR = str(Path(sys.executable).parent / "pcimgr")  # what the rules will run


def pcimgr(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def eventually(check: Callable[[], bool], seconds: float = 90) -> bool:
    """udev runs pcimgr (a Python start of seconds in this guest): poll, do not sleep blindly."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def vfs_on_vfio() -> list[str | None]:
    links = sorted(n for n in os.listdir(PF_DIR) if n.startswith("virtfn"))
    return [driver(os.path.basename(os.readlink(PF_DIR / n))) for n in links]


def udevadm_test_under_systemd(action: str, address: str) -> str:
    """What udev would do with the installed rules if systemd were PID 1 (the guest's init
    is busybox): the rules test /run/systemd/system, as systemd's own tools do."""
    Path("/run/systemd/system").mkdir(parents=True)
    try:
        test = subprocess.run(["udevadm", "test", f"--action={action}",
                               f"/sys/bus/pci/devices/{address}"], capture_output=True, text=True)
    finally:
        Path("/run/systemd/system").rmdir()
    return test.stdout + test.stderr


def test_udev_binds_a_defined_function_without_pcimgr_being_run(rules: None) -> None:
    # the e1000 pair shares a group: defined together, applied together
    r = pcimgr("define", E1000[0], "--driver", "vfio-pci", "--group")
    assert r.exit_code == 0, r.output
    test = subprocess.run(["udevadm", "test", "--action=add", f"/sys/bus/pci/devices/{E1000[0]}"],
                          capture_output=True, text=True)
    out = test.stdout + test.stderr
    assert "70-pcimgr.rules" in out and f"apply --device {E1000[0]}" in out, out[-3000:]
    assert not [line for line in out.splitlines()
                if "70-pcimgr.rules" in line and "invalid" in line.lower()], out[-3000:]
    assert driver(E1000[0]) == "e1000"
    # where systemd runs (its runtime directory is what the rules test), a driver is still
    # claimed from udev itself, before the host driver's module loads
    out = udevadm_test_under_systemd("add", E1000[0])
    assert f"apply --device {E1000[0]}" in out and "SYSTEMD_WANTS" not in out, out[-3000:]
    other = subprocess.run(["udevadm", "test", "--action=add",
                            f"/sys/bus/pci/devices/{E1000E[0]}"], capture_output=True, text=True)
    assert "apply --device" not in other.stdout + other.stderr  # not defined: not matched

    subprocess.run(["udevadm", "trigger", "--action=add", f"/sys/bus/pci/devices/{E1000[0]}"],
                   check=True)
    assert eventually(lambda: [driver(a) for a in E1000] == ["vfio-pci", "vfio-pci"]), \
        [driver(a) for a in E1000]
    assert driver(E1000E[0]) == "e1000e"  # only what was defined
    assert pcimgr("status").exit_code == 0


def test_vfs_come_back_after_the_pf_driver_is_rebound(rules: None) -> None:
    r = pcimgr("define", PF, "--vfs", "2", "--vf-driver", "vfio-pci")
    assert r.exit_code == 0, r.output
    assert pcimgr("apply").exit_code == 0
    assert vfs_on_vfio() == ["vfio-pci", "vfio-pci"]

    # unbinding the PF driver destroys the VFs; binding it again is a "bind" uevent
    Path("/sys/bus/pci/drivers/igb/unbind").write_text(PF)
    assert vfs_on_vfio() == []
    Path("/sys/bus/pci/drivers/igb/bind").write_text(PF)
    assert eventually(lambda: vfs_on_vfio() == ["vfio-pci", "vfio-pci"]), vfs_on_vfio()

    # under systemd the VF work goes to the template unit, its output in the journal
    out = udevadm_test_under_systemd("add", PF)
    assert f"SYSTEMD_WANTS=pcimgr-apply@{PF}.service" in out, out[-3000:]
    assert "apply --device" not in out, out[-3000:]
    out = udevadm_test_under_systemd("bind", PF)
    assert f"systemctl --no-block start pcimgr-apply@{PF}.service" in out, out[-3000:]
    assert "apply --device" not in out, out[-3000:]

    # changed behind pcimgr's back: status reports it
    (PF_DIR / "sriov_numvfs").write_text("0")
    r = pcimgr("status")
    assert r.exit_code == 10 and "0 VF(s), defined 2" in r.output, r.output


def test_doctor_in_the_guest() -> None:
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    r = pcimgr("doctor", "--json")
    found = {c["name"]: c["status"] for c in json.loads(r.output.split("\npcimgr:")[0])["checks"]}
    assert found["iommu"] == "pass"
    assert found["interrupt-remapping"] == "pass"
    assert found["vfio"] == "pass"
    assert found["sr-iov"] == "pass"
