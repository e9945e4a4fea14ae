"""The udev rules and the boot unit: what install-udev writes, and systemd's own checker."""

import shutil
import subprocess
from pathlib import Path

import pytest

from pcimgr.persist import udev

REPO = Path(__file__).resolve().parent.parent


def test_shipped_files_are_what_install_udev_writes() -> None:
    """udev/ holds the files for a packaged pcimgr (/usr/bin, /etc/pcimgr)."""
    assert (REPO / "udev" / udev.RULES_NAME).read_text() == \
        udev.rules("/usr/bin/pcimgr", "/etc/pcimgr")
    assert (REPO / "udev" / udev.UNIT_NAME).read_text() == \
        udev.unit("/usr/bin/pcimgr", "/etc/pcimgr")


def test_install_under_a_prefix(run, demo_root: Path, tmp_path: Path) -> None:
    r = run("--sysfs-root", demo_root, "install-udev", "--prefix", tmp_path)
    assert r.exit_code == 0, r.output
    rules = (tmp_path / "etc/udev/rules.d/70-pcimgr.rules").read_text()
    cfg = f"{demo_root}/.pcimgr-config"
    assert f'TEST!="{cfg}/udev/%k_$env{{PCI_ID}}.env", GOTO="pcimgr_end"' in rules
    assert f"--config-dir {cfg} apply --device %k --quiet" in rules
    assert "driver_override" not in rules.replace("before it writes driver_override", "")
    unit = (tmp_path / "etc/systemd/system/pcimgr-apply.service").read_text()
    assert "Before=libvirtd.service" in unit and f"--config-dir {cfg} apply" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / udev.UNIT_NAME
    unit.write_text(udev.unit("/bin/true", "/etc/pcimgr"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in r.stderr.splitlines() if udev.UNIT_NAME in line]
    assert problems == [], r.stderr
