"""doctor --fix: the IOMMU on the kernel command line through the host's bootloader, vfio early
in boot and defined functions claimed in the initramfs (docs/boot.md), on simulated hosts of
each layout; the hook and the dracut module run by a real shell."""

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from pcimgr.advice import early_claim
from pcimgr.host.linux import LinuxMachine
from pcimgr.sim import builder, profiles
from pcimgr.sim.machine import SimulatedMachine
from tests.conftest import golden, tree

GRUB = "etc/default/grub"


def make(tmp_path: Path, iommu: bool = False, **facts: object) -> Path:
    """The demo host with other boot facts (CPU vendor, bootloader, initramfs generator)."""
    profile = profiles.get("demo")
    profile = dataclasses.replace(profile, host=dataclasses.replace(profile.host, **facts))
    root = tmp_path / "sys"
    builder.build(str(root), profile, iommu=iommu)
    return root


def fix(run, root: Path, *args: str) -> tuple[int, str]:
    r = run("--sysfs-root", root, "doctor", "--fix", *args)
    return r.exit_code, r.output.replace(str(root), "ROOT")


def ran(root: Path) -> list[list[str]]:
    return SimulatedMachine(str(root)).ran()


def test_grub_dry_run_shows_each_diff_and_command_and_writes_nothing(run, tmp_path) -> None:
    root = make(tmp_path)
    before = tree(root)
    code, out = fix(run, root, "--dry-run")
    assert code == 0, out
    golden("doctor_fix_grub.txt", out)
    assert tree(root) == before and ran(root) == []


def test_real_run_then_a_second_that_changes_nothing(run, tmp_path) -> None:
    root = make(tmp_path)
    grub_before = (root / GRUB).read_bytes()
    code, out = fix(run, root)
    assert code == 0, out
    assert "wrote ROOT/etc/default/grub (as it was: ROOT/etc/default/grub.pcimgr-bak)" in out
    assert out.endswith("Reboot for the changes to take effect: the kernel command line and "
                        "the initramfs are read at boot.\n")
    assert ran(root) == [["update-initramfs", "-u"], ["update-grub"]]
    # the one line changed, everything else byte for byte; the backup is the file as it was
    after = (root / GRUB).read_bytes()
    assert (root / (GRUB + ".pcimgr-bak")).read_bytes() == grub_before
    assert after == grub_before.replace(b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"',
                                        b'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on '
                                        b'iommu=pt"')
    modules = (root / "etc/initramfs-tools/modules").read_text()
    assert modules.endswith("# sd_mod\n# pcimgr doctor --fix: vfio early (docs/boot.md)\n"
                            "vfio\nvfio_iommu_type1\nvfio_pci\n")
    assert (root / "etc/initramfs-tools/modules.pcimgr-bak").exists()
    assert (root / "etc/modules-load.d/pcimgr-vfio.conf").read_text().splitlines()[1:] == \
        ["vfio", "vfio_iommu_type1", "vfio_pci"]
    hook = root / "etc/initramfs-tools/hooks/pcimgr"
    assert os.stat(hook).st_mode & 0o777 == 0o755
    assert not (root / "etc/modules-load.d/pcimgr-vfio.conf.pcimgr-bak").exists()  # was new

    snapshot = tree(root)
    code, out = fix(run, root)
    assert code == 0
    assert out.endswith("Nothing to change: the kernel command line and vfio early in boot "
                        "are set up already.\n")
    assert "has intel_iommu=on iommu=pt" in out
    assert tree(root) == snapshot and len(ran(root)) == 2
    assert fix(run, root, "--dry-run")[1] == out


def test_a_host_booted_with_the_iommu_needs_only_the_vfio_part(run, tmp_path) -> None:
    root = make(tmp_path, iommu=True)
    code, out = fix(run, root, "--dry-run")
    assert code == 0
    assert "GRUB_CMDLINE_LINUX_DEFAULT: has intel_iommu=on iommu=pt" in out
    assert "--- ROOT/etc/default/grub" not in out and "update-grub" not in out
    assert "would run: update-initramfs -u" in out


def test_amd_gets_amd_iommu(run, tmp_path) -> None:
    root = make(tmp_path, cpu_vendor="AuthenticAMD")
    code, out = fix(run, root)
    assert code == 0, out
    assert "CPU: AuthenticAMD, so the kernel command line needs amd_iommu=on iommu=pt" in out
    assert b'GRUB_CMDLINE_LINUX_DEFAULT="quiet amd_iommu=on iommu=pt"' in (root / GRUB).read_bytes()
    assert b"intel_iommu" not in (root / GRUB).read_bytes()


def test_unknown_cpu_vendor_is_refused(run, tmp_path) -> None:
    root = make(tmp_path, cpu_vendor="CentaurHauls")
    before = tree(root)
    code, out = fix(run, root)
    assert code == 4 and out.count("\n") == 1
    assert "vendor_id CentaurHauls" in out and tree(root) == before


@pytest.mark.parametrize(("line", "why"), [
    ('GRUB_CMDLINE_LINUX_DEFAULT="quiet splash', "unbalanced quotes"),
    ('GRUB_CMDLINE_LINUX_DEFAULT="quiet \\', "a line continuation"),
    ('GRUB_CMDLINE_LINUX_DEFAULT="quiet $EXTRA"', "shell expansion"),
    ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"" splash"', "more than one quoted string"),
])
def test_a_line_it_cannot_parse_is_refused_in_one_line(run, tmp_path, line, why) -> None:
    root = make(tmp_path)
    text = (root / GRUB).read_text().replace('GRUB_CMDLINE_LINUX_DEFAULT="quiet"', line)
    (root / GRUB).write_text(text)
    before = tree(root)
    for args in ((), ("--dry-run",)):
        code, out = fix(run, root, *args)
        assert code == 4, out
        assert out.count("\n") == 1, out
        assert out.startswith(f"pcimgr: cannot edit ROOT/{GRUB}: its GRUB_CMDLINE_LINUX_DEFAULT "
                              f"(line 9) has {why}"), out
        assert "by hand" in out
    assert tree(root) == before and ran(root) == []


def test_a_variable_set_twice_or_overridden_in_grub_d_is_refused(run, tmp_path) -> None:
    root = make(tmp_path)
    original = (root / GRUB).read_text()
    (root / GRUB).write_text(original + 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n')
    code, out = fix(run, root)
    assert code == 4 and "GRUB_CMDLINE_LINUX_DEFAULT is set on lines 9 and 26" in out
    (root / GRUB).write_text(original)
    (root / "etc/default/grub.d").mkdir()
    (root / "etc/default/grub.d/50-cloudimg-settings.cfg").write_text(
        'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"\n')
    before = tree(root)
    code, out = fix(run, root)
    assert code == 4 and out.count("\n") == 1
    assert "50-cloudimg-settings.cfg sets GRUB_CMDLINE_LINUX_DEFAULT after" in out
    assert tree(root) == before
    # one that adds to the variable leaves the edit in /etc/default/grub counting
    (root / "etc/default/grub.d/50-cloudimg-settings.cfg").write_text(
        'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT console=ttyS0"\n')
    assert fix(run, root, "--dry-run")[0] == 0


def test_a_file_it_does_not_recognise_and_the_iommu_turned_off(run, tmp_path) -> None:
    root = make(tmp_path)
    (root / GRUB).write_bytes(b"\xff\xfe binary\n")
    before = tree(root)
    code, out = fix(run, root)
    assert code == 4 and "is not a text file pcimgr recognises" in out and tree(root) == before
    (root / GRUB).write_text("# nothing but comments\n")
    code, out = fix(run, root)
    assert code == 4 and "it has no GRUB_ setting" in out
    (root / GRUB).write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=off"\n')
    code, out = fix(run, root)
    assert code == 4 and "turns the IOMMU off (intel_iommu=off)" in out


def test_only_the_missing_words_and_other_value_forms(run, tmp_path) -> None:
    root = make(tmp_path)
    text = (root / GRUB).read_text()
    (root / GRUB).write_text(text.replace('GRUB_CMDLINE_LINUX=""',
                                          "GRUB_CMDLINE_LINUX='intel_iommu=on,sm_on'"))
    assert fix(run, root)[0] == 0
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=pt"\n' in (root / GRUB).read_text()
    # a bare word becomes a quoted string; a comment after it stays
    (root / GRUB).write_text("GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=splash  # mine\n")
    assert fix(run, root)[0] == 0
    assert (root / GRUB).read_text() == ('GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="splash '
                                         'intel_iommu=on iommu=pt"  # mine\n')
    # neither variable: one line appended
    (root / GRUB).write_text("GRUB_TIMEOUT=5")
    assert fix(run, root)[0] == 0
    assert (root / GRUB).read_text() == ('GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT='
                                         '"intel_iommu=on iommu=pt"\n')


def test_systemd_boot_kernel_cmdline(run, tmp_path) -> None:
    root = make(tmp_path, bootloader="systemd-boot")
    code, out = fix(run, root, "--dry-run")
    assert code == 0, out
    golden("doctor_fix_systemd_boot.txt", out)
    assert fix(run, root)[0] == 0
    assert (root / "etc/kernel/cmdline").read_text() == \
        "root=/dev/nvme0n1p2 ro quiet intel_iommu=on iommu=pt\n"
    assert (root / "etc/kernel/cmdline.pcimgr-bak").read_text() == "root=/dev/nvme0n1p2 ro quiet\n"
    assert ran(root) == [["update-initramfs", "-u"],
                         ["kernel-install", "add", "6.1.0-26-amd64",
                          "/boot/vmlinuz-6.1.0-26-amd64"]]
    assert "Nothing to change" in fix(run, root)[1]


def test_grubby_and_dracut(run, tmp_path) -> None:
    root = make(tmp_path, bootloader="grubby", initramfs="dracut", cpu_vendor="AuthenticAMD")
    grub_before = (root / GRUB).read_bytes()
    code, out = fix(run, root, "--dry-run")
    assert code == 0, out
    golden("doctor_fix_grubby_dracut.txt", out)
    assert fix(run, root)[0] == 0
    assert ran(root) == [["dracut", "-f"],
                         ["grubby", "--update-kernel=ALL", "--args=amd_iommu=on iommu=pt"]]
    assert (root / GRUB).read_bytes() == grub_before  # grubby's to keep in step, not ours
    module = root / early_claim.DRACUT_MODULE
    assert os.stat(module).st_mode & 0o777 == 0o755
    # what grubby does to the entries; then nothing is left to do
    entries = root / "boot/loader/entries"
    for entry in entries.iterdir():
        entry.write_text(entry.read_text().replace("options root=/dev/nvme0n1p2 ro quiet",
                                                   "options root=/dev/nvme0n1p2 ro quiet "
                                                   "amd_iommu=on iommu=pt"))
    assert "Nothing to change" in fix(run, root)[1]
    # RHEL 8: the options in grubenv
    for entry in entries.iterdir():
        entry.write_text(entry.read_text().replace(
            "options root=/dev/nvme0n1p2 ro quiet amd_iommu=on iommu=pt", "options $kernelopts"))
    (root / "boot/grub2").mkdir()
    (root / "boot/grub2/grubenv").write_text("# GRUB Environment Block\n"
                                             "kernelopts=root=/dev/sda2 ro amd_iommu=on\n")
    code, out = fix(run, root, "--dry-run")
    assert "would run: grubby --update-kernel=ALL --args=iommu=pt" in out
    assert fix(run, root)[0] == 0
    assert ran(root)[-1] == ["grubby", "--update-kernel=ALL", "--args=iommu=pt"]


def test_unknown_bootloader_is_refused(run, tmp_path) -> None:
    root = make(tmp_path, bootloader="none", initramfs="none")
    before = tree(root)
    code, out = fix(run, root)
    assert code == 4 and out.count("\n") == 1
    assert out.startswith("pcimgr: cannot tell the bootloader: no grubby, no "
                          "ROOT/etc/kernel/cmdline (kernel-install, systemd-boot) and no "
                          "ROOT/etc/default/grub with update-grub or grub-mkconfig; add "
                          "intel_iommu=on iommu=pt to the kernel command line by hand"), out
    assert tree(root) == before


def test_defined_functions_are_named_and_options_checked(run, tmp_path) -> None:
    root = make(tmp_path, iommu=True)
    assert run("--sysfs-root", root, "define", "04:00.0", "--driver", "vfio-pci",
               "--group").exit_code == 0
    code, out = fix(run, root, "--dry-run")
    assert ("  functions defined onto vfio-pci: 0000:04:00.0, 0000:04:00.1 (after `pcimgr "
            "define` or `undefine`: update-initramfs -u)") in out
    assert run("--sysfs-root", root, "doctor", "--dry-run").exit_code == 2
    assert run("--sysfs-root", root, "doctor", "--fix", "--json").exit_code == 2


def test_a_write_failing_half_way_puts_back_what_was_written(run, tmp_path, mocker) -> None:
    root = make(tmp_path)
    before = tree(root)
    real = SimulatedMachine.write_system_file
    calls = []

    def failing(self, rel: str, data: bytes, mode: int) -> None:
        calls.append(rel)
        if rel == "etc/initramfs-tools/modules":
            raise OSError(28, "No space left on device", rel)
        real(self, rel, data, mode)
    mocker.patch.object(SimulatedMachine, "write_system_file", failing)
    code, out = fix(run, root)
    assert code == 7 and "rolled back: they are as they were" in out
    after = tree(root)
    # the backups stay (they hold what the files were); the files are as before
    backups = {k for k in after if k.endswith(".pcimgr-bak")}
    assert {k: v for k, v in after.items() if k not in backups} == before | {
        k: v for k, v in after.items() if k.startswith("etc/modules-load.d")}
    assert not (root / "etc/modules-load.d/pcimgr-vfio.conf").exists()
    assert ran(root) == []


def test_not_root_on_a_real_host(run, tmp_path, mocker) -> None:
    # never let a test touch this machine's /etc, whatever happens
    mocker.patch.object(LinuxMachine, "write_system_file", side_effect=AssertionError)
    mocker.patch.object(LinuxMachine, "run_program", side_effect=AssertionError)
    mocker.patch("os.geteuid", return_value=1000)
    r = run("--sysfs-root", "/sys", "doctor", "--fix")
    assert r.exit_code == 5 and "doctor --fix needs root" in r.output
    # a tree that is not this host's /sys is never changed, root or not
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    r = run("--sysfs-root", tmp_path / "sys", "doctor", "--fix")
    assert r.exit_code == 4 and "not this host's /sys" in r.output, r.output


def _shell(tmp_path: Path, script: str, shell: str, env: dict[str, str]) -> None:
    r = subprocess.run([shell, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", **env})
    assert r.returncode == 0, r.stderr


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "cfg"
    (cfg / "udev").mkdir(parents=True)
    (cfg / "udev/0000:04:00.0_8086:105E.env").write_text("PCIMGR_DRIVER=vfio-pci\n")
    (cfg / "udev/0000:05:00.0_8086:10C9.env").write_text("PCIMGR_VFS=4\n")
    return cfg


def test_the_initramfs_tools_hook_puts_the_env_files_and_the_rule_in(tmp_path) -> None:
    cfg = _config(tmp_path)
    functions = tmp_path / "hook-functions"
    functions.write_text('manual_add_modules() { echo "$@" > "$DESTDIR/modules"; }\n')
    hook = tmp_path / "hook"
    hook.write_text(early_claim.hook(str(cfg)).replace(
        "/usr/share/initramfs-tools/hook-functions", str(functions)))
    dest = tmp_path / "initramfs"
    dest.mkdir()
    r = subprocess.run(["sh", str(hook), "prereqs"], capture_output=True, text=True)
    assert r.stdout == "udev\n"
    _shell(tmp_path, f"sh {hook}", "sh", {"DESTDIR": str(dest)})
    assert (dest / "modules").read_text() == "vfio vfio_iommu_type1 vfio_pci\n"
    assert sorted(os.listdir(dest / "etc/pcimgr/udev")) == [
        "0000:04:00.0_8086:105E.env", "0000:05:00.0_8086:10C9.env"]
    assert (dest / "etc/udev/rules.d/60-pcimgr-early.rules").read_text() == \
        early_claim.EARLY_RULES


def test_the_dracut_module_puts_the_env_files_and_the_rule_in(tmp_path) -> None:
    cfg = _config(tmp_path)
    module = tmp_path / "module-setup.sh"
    module.write_text(early_claim.dracut_module(str(cfg)))
    dest = tmp_path / "initramfs"
    dest.mkdir()  # dracut makes it
    stubs = ('inst_dir() { mkdir -p "$initdir$1"; }\n'
             'inst_simple() { cp "$1" "$initdir$2"; }\n'
             'instmods() { echo "$@" > "$initdir/modules"; }\n')
    _shell(tmp_path, f"{stubs}. {module}; check && installkernel && install", "bash",
           {"initdir": str(dest)})
    assert (dest / "modules").read_text() == "vfio vfio_iommu_type1 vfio_pci\n"
    assert sorted(os.listdir(dest / "etc/pcimgr/udev")) == [
        "0000:04:00.0_8086:105E.env", "0000:05:00.0_8086:10C9.env"]
    assert (dest / "etc/udev/rules.d/60-pcimgr-early.rules").read_text() == \
        early_claim.EARLY_RULES


def test_the_early_rule_parses(tmp_path) -> None:
    """udevadm verify (systemd 254+) where there is one; else the shape by hand."""
    rules = tmp_path / "60-pcimgr-early.rules"
    rules.write_text(early_claim.EARLY_RULES)
    r = subprocess.run(["udevadm", "verify", str(rules)], capture_output=True, text=True) \
        if os.path.exists("/usr/bin/udevadm") else None
    if r is not None and "verify" not in r.stderr and "Unknown command" not in r.stderr:
        assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in early_claim.EARLY_RULES.splitlines()
             if line and not line.startswith("#")]
    assert lines[-1] == 'LABEL="pcimgr_early_end"'
    assert all(line.count('"') % 2 == 0 for line in lines)
    assert json.dumps(lines)  # plain text
