"""The udev rules and the boot unit: what install-udev writes, and systemd's own checker."""

import shutil
import subprocess
from pathlib import Path

import pytest

from pcimgr.persist import udev

REPO = Path(__file__).resolve().parent.parent


def test_shipped_files_are_what_install_udev_writes() -> None:
    """udev/ holds the files for a packaged pcimgr (/usr/bin, /etc/pcimgr)."""
    for rel, text in udev.files("/usr/bin/pcimgr", "/etc/pcimgr"):
        assert (REPO / "udev" / Path(rel).name).read_text() == text, rel


def test_install_under_a_prefix(run, demo_root: Path) -> None:
    tmp_path = demo_root / "pkg"  # a simulated host's files stay inside it
    r = run("--sysfs-root", demo_root, "install-udev", "--prefix", tmp_path)
    assert r.exit_code == 0, r.output
    rules = (tmp_path / "etc/udev/rules.d/70-pcimgr.rules").read_text()
    cfg = f"{demo_root}/.pcimgr-config"
    assert f'TEST!="{cfg}/udev/%k_$env{{PCI_ID}}.env", GOTO="pcimgr_end"' in rules
    assert f"--config-dir {cfg} apply --device %k --quiet" in rules
    assert "driver_override" not in rules.replace("before it writes driver_override", "")
    unit = (tmp_path / "etc/systemd/system/pcimgr-apply.service").read_text()
    assert "Before=libvirtd.service" in unit and f"--config-dir {cfg} apply" in unit
    assert "udev-settle" not in unit  # deprecated; the rules start a unit per function
    template = (tmp_path / "etc/systemd/system/pcimgr-apply@.service").read_text()
    assert f"--config-dir {cfg} apply --device %I\n" in template


def test_rules_claim_drivers_from_udev_and_leave_vf_work_to_the_unit() -> None:
    """A driver is claimed from udev (before 80-drivers loads the host driver); VF work runs
    in pcimgr-apply@ADDR under systemd (its output in the journal), from udev without it.
    Nothing happens for a function without a definition."""
    lines = udev.rules("/usr/bin/pcimgr", "/etc/pcimgr").splitlines()
    apply = 'RUN+="/usr/bin/pcimgr --config-dir /etc/pcimgr apply --device %k --quiet"'
    defined = lines.index('TEST!="/etc/pcimgr/udev/%k_$env{PCI_ID}.env", GOTO="pcimgr_end"')
    claim = lines.index(f'ACTION=="add", ENV{{PCIMGR_DRIVER}}=="?*", {apply}')
    vfs_only = lines.index('ENV{PCIMGR_VFS}!="?*", GOTO="pcimgr_end"')
    # a PF's add without its driver starts nothing: its bind follows (one run, not two)
    driverless = lines.index('ACTION=="add", ENV{DRIVER}!="?*", GOTO="pcimgr_end"')
    systemd = lines.index('TEST=="/run/systemd/system", GOTO="pcimgr_systemd"')
    label = lines.index('LABEL="pcimgr_systemd"')
    assert defined < claim < vfs_only < driverless < systemd < label
    without = "\n".join(lines[systemd:label])
    assert f'ACTION=="bind", {apply}' in without
    assert f'ACTION=="add", ENV{{PCIMGR_DRIVER}}!="?*", {apply}' in without  # not twice
    under = "\n".join(lines[label:])
    assert 'ACTION=="add", TAG+="systemd", ENV{SYSTEMD_WANTS}+="pcimgr-apply@%k.service"' \
        in under
    assert 'ACTION=="bind", RUN+="/bin/systemctl --no-block start pcimgr-apply@%k.service"' \
        in under
    assert "/usr/bin/pcimgr" not in under


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    unit = tmp_path / udev.UNIT_NAME
    unit.write_text(udev.unit("/bin/true", "/etc/pcimgr"))
    # a template file is verified as its instance @i (an instance's own file name is looked
    # up as a template and fails with "Couldn't process aliases", checking nothing)
    template = tmp_path / udev.TEMPLATE_NAME
    template.write_text(udev.template("/bin/true", "/etc/pcimgr"))
    for path in (unit, template):
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "pcimgr-apply" not in r.stderr, r.stderr


def test_simulated_host_never_installs_outside_itself(run, demo_root: Path,
                                                      tmp_path: Path) -> None:
    r = run("--sysfs-root", demo_root, "install-udev", "--prefix", tmp_path / "out")
    assert r.exit_code == 2 and "simulated host" in r.output and r.output.count("\n") == 1
    assert not (tmp_path / "out").exists()
    r = run("--sysfs-root", demo_root, "install-udev", "--dry-run")
    assert r.exit_code == 0 and f"would write {demo_root}/etc/udev/rules.d/" in r.output
    assert "udevadm" not in r.output and not (demo_root / "etc/udev").exists()
    r = run("--sysfs-root", demo_root, "install-udev")
    assert r.exit_code == 0
    assert (demo_root / "etc/udev/rules.d" / udev.RULES_NAME).exists()
    assert r.output.splitlines() == [f"wrote {demo_root}/etc/udev/rules.d/70-pcimgr.rules",
                                     f"wrote {demo_root}/etc/udev/rules.d/71-pcimgr-mdev.rules",
                                     f"wrote {demo_root}/etc/systemd/system/"
                                     "pcimgr-apply.service",
                                     f"wrote {demo_root}/etc/systemd/system/"
                                     "pcimgr-apply@.service"]
