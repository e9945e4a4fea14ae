"""doctor --fix reads the kernel command line as the kernel will: every assignment, +=
and grub.d file in order, the last value of a switch winning; what turns the IOMMU off or
keeps vfio from loading is refused, a linked /etc/default/grub has its target edited, and
no temporary is left in /etc."""

import errno
import os
import signal
from pathlib import Path

import pytest

from pcimgr.core.errors import Interrupted
from tests.conftest import tree
from tests.test_doctor import checks
from tests.test_doctor_fix import GRUB, fix, make, ran
from tests.test_hostdriver import set_host_facts

DEFAULT = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"'


def with_grub(root: Path, old: str, new: str) -> None:
    text = (root / GRUB).read_text()
    assert old in text
    (root / GRUB).write_text(text.replace(old, new))


def refused(run, root: Path, *words: str) -> str:  # type: ignore[no-untyped-def]
    before, commands = tree(root), ran(root)
    for args in ((), ("--dry-run",)):
        code, out = fix(run, root, *args)
        assert code == 4 and out.count("\n") == 1, out
        for w in words:
            assert w in out, out
    assert tree(root) == before and ran(root) == commands
    return out


def files(root: Path) -> dict[str, str]:
    """The tree but the backups, which a rolled-back run keeps (the files as they were)."""
    return {k: v for k, v in tree(root).items() if not k.endswith(".pcimgr-bak")}


@pytest.mark.parametrize("line", [
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=off"',
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on intel_iommu=off"',
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on"\n'
    'GRUB_CMDLINE_LINUX_DEFAULT+=" intel_iommu=off"',
])
def test_a_command_line_that_ends_with_the_iommu_off_is_refused(run, tmp_path, line) -> None:  # type: ignore[no-untyped-def]
    root = make(tmp_path)
    with_grub(root, DEFAULT, line)
    off = "iommu=off" if "iommu=off\"" in line and "intel" not in line else "intel_iommu=off"
    refused(run, root, f"turns the IOMMU off ({off})", f"ROOT/{GRUB} (line ")


def test_the_last_value_wins(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = make(tmp_path)
    with_grub(root, DEFAULT, 'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=off intel_iommu=on"')
    code, out = fix(run, root)
    assert code == 0, out
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=off intel_iommu=on iommu=pt"' in \
        (root / GRUB).read_text()


def test_a_grub_d_file_that_adds_the_iommu_off_is_refused(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = make(tmp_path)
    (root / "etc/default/grub.d").mkdir()
    (root / "etc/default/grub.d/60-mine.cfg").write_text(
        'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT intel_iommu=off"\n')
    refused(run, root, "ROOT/etc/default/grub.d/60-mine.cfg (line 1) turns the IOMMU off "
                       "(intel_iommu=off)")


@pytest.mark.parametrize("word", ["module_blacklist=nouveau,vfio_pci",
                                  "modprobe.blacklist=vfio-pci", "module_blacklist=vfio"])
def test_a_blacklisted_vfio_module_is_refused(run, tmp_path, word) -> None:  # type: ignore[no-untyped-def]
    root = make(tmp_path)
    with_grub(root, 'GRUB_CMDLINE_LINUX=""', f'GRUB_CMDLINE_LINUX="{word}"')
    refused(run, root, f"from loading ({word})", "remove it")


def test_a_linked_grub_file_has_its_target_edited(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = make(tmp_path)
    real = root / "etc/default/grub.real"
    (root / GRUB).rename(real)
    (root / GRUB).symlink_to("grub.real")
    code, out = fix(run, root)
    assert code == 0, out
    assert os.readlink(root / GRUB) == "grub.real"
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on iommu=pt"' in real.read_text()
    assert "wrote ROOT/etc/default/grub.real (as it was: ROOT/etc/default/grub.real.pcimgr-bak)" \
        in out
    # a link out of the host's files is refused, its target untouched
    outside = tmp_path / "elsewhere"
    outside.write_text(real.read_text().replace("intel_iommu=on iommu=pt", "splash"))
    (root / GRUB).unlink()
    (root / GRUB).symlink_to(outside)
    kept = outside.read_bytes()
    refused(run, root, f"ROOT/{GRUB}")
    assert outside.read_bytes() == kept


def test_no_temporary_stays_in_etc(run, tmp_path, mocker) -> None:  # type: ignore[no-untyped-def]
    root = make(tmp_path)
    stale = root / "etc/default/.grub.pcimgr-tmp.999999"
    stale.write_text("left by a killed run")
    before = files(root)
    del before["etc/default/.grub.pcimgr-tmp.999999"]
    real = os.open

    def interrupted_open(path, flags, *args, **kw):  # type: ignore[no-untyped-def]
        fd = real(path, flags, *args, **kw)
        if ".pcimgr-tmp." in str(path) and str(path).endswith(f"initramfs-tools/.modules"
                                                              f".pcimgr-tmp.{os.getpid()}"):
            raise Interrupted(signal.SIGINT)  # Ctrl-C as the open returns
        return fd
    mocker.patch("os.open", side_effect=interrupted_open)
    code, out = fix(run, root)
    assert code == 7, out
    assert files(root) == before  # the stale one swept, none of this run's left
    mocker.stopall()
    stale.write_text("left again")
    mocker.patch("os.write", side_effect=OSError(errno.ENOSPC, "No space left on device"))
    assert fix(run, root)[0] == 7
    assert files(root) == before


def test_doctor_flags_a_running_kernel_that_blacklists_vfio(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    set_host_facts(demo_root, cmdline="ro quiet intel_iommu=on modprobe.blacklist=vfio-pci")
    code, data = checks(run, demo_root)
    vfio = data["by_name"]["vfio"]
    assert vfio["status"] == "fail" and "modprobe.blacklist=vfio-pci" in vfio["detail"]
    assert code == 10 and data["passthrough_possible"] is False
