"""install-udev writes below the system root only, never through a link, and all or
nothing: a failure or Ctrl-C midway leaves the rules and units as they were."""

import errno
import os
import signal
from pathlib import Path

from pcimgr.core.errors import Interrupted
from pcimgr.persist import udev
from tests.conftest import tree

RULES = f"etc/udev/rules.d/{udev.RULES_NAME}"
UNIT = f"etc/systemd/system/{udev.UNIT_NAME}"
TEMPLATE = f"etc/systemd/system/{udev.TEMPLATE_NAME}"


def test_a_linked_etc_udev_is_refused_and_nothing_is_written(run, demo_root: Path,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    outside = tmp_path / "real-etc-udev"
    outside.mkdir()
    (demo_root / "etc/udev").symlink_to(outside)
    was = tree(demo_root)
    r = run("--sysfs-root", demo_root, "install-udev")
    assert r.exit_code == 4, r.output
    assert r.output.count("\n") == 1 and "symbolic link" in r.output
    assert list(outside.iterdir()) == []
    assert tree(demo_root) == was


def test_a_linked_rules_file_is_refused(run, demo_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    victim = tmp_path / "victim"
    victim.write_text("mine\n")
    (demo_root / "etc/udev/rules.d").mkdir(parents=True)
    (demo_root / RULES).symlink_to(victim)
    was = tree(demo_root)
    r = run("--sysfs-root", demo_root, "install-udev")
    assert r.exit_code == 4 and r.output.count("\n") == 1, r.output
    assert victim.read_text() == "mine\n" and tree(demo_root) == was


def _with_old_rules(root: Path) -> dict[str, str]:
    (root / "etc/udev/rules.d").mkdir(parents=True)
    (root / RULES).write_bytes(b"# the rules as they were, no newline")
    (root / f"etc/udev/rules.d/{udev.RULES_NAME}.tmp.999999").write_text("stale")
    return tree(root)


def test_a_full_disk_at_the_third_file_puts_everything_back(run, demo_root: Path,  # type: ignore[no-untyped-def]
                                                            mocker) -> None:  # type: ignore[no-untyped-def]
    was = _with_old_rules(demo_root)
    del was[f"etc/udev/rules.d/{udev.RULES_NAME}.tmp.999999"]  # swept: a killed run's
    real = os.write

    def write(fd: int, data: bytes) -> int:
        if b"Apply pcimgr's definition of PCI function %I" in bytes(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    mocker.patch("os.write", side_effect=write)
    r = run("--sysfs-root", demo_root, "install-udev")
    assert r.exit_code == 7, r.output
    assert r.output.count("\n") == 1 and "No space left on device" in r.output
    assert "rolled back" in r.output
    assert tree(demo_root) == was  # old rules byte for byte; new unit gone, its dirs too
    assert not (demo_root / "etc/systemd").exists()


def test_ctrl_c_midway_puts_everything_back(run, demo_root: Path, mocker) -> None:  # type: ignore[no-untyped-def]
    was = _with_old_rules(demo_root)
    del was[f"etc/udev/rules.d/{udev.RULES_NAME}.tmp.999999"]
    real = os.replace

    def replace(src: str, dst: str, **kw: int) -> None:
        if dst == udev.UNIT_NAME:
            raise Interrupted(signal.SIGINT)
        real(src, dst, **kw)
    mocker.patch("os.replace", side_effect=replace)
    r = run("--sysfs-root", demo_root, "install-udev")
    assert r.exit_code == 7, r.output
    assert r.output.count("\n") == 1 and "SIGINT" in r.output
    assert tree(demo_root) == was


def test_an_install_over_old_files_keeps_their_mode(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    _with_old_rules(demo_root)
    os.chmod(demo_root / RULES, 0o640)
    r = run("--sysfs-root", demo_root, "install-udev")
    assert r.exit_code == 0, r.output
    assert (demo_root / RULES).stat().st_mode & 0o777 == 0o640
    assert (demo_root / TEMPLATE).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (demo_root / "etc/udev/rules.d").iterdir()) == \
        [udev.RULES_NAME, udev.MDEV_RULES_NAME]
