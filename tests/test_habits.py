"""The habits of the tools administrators know (issue 14, part): bind/unbind several
functions as one transaction, `reattach` as virsh calls it, define/undefine dry runs,
NO_COLOR."""

import errno
from pathlib import Path

from click.testing import CliRunner

from pcimgr.cli.app import cli
from pcimgr.core.errors import KernelError
from pcimgr.host.sysfs import Sysfs
from tests.conftest import driver_of, tree

PAIR = ("0000:04:00.0", "0000:04:00.1")


def test_bind_and_unbind_take_several_functions_as_one_transaction(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "bind", *PAIR, "pci-stub")
    assert r.exit_code == 0, r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["pci-stub", "pci-stub"]
    r = run("--sysfs-root", demo_root, "unbind", *PAIR)
    assert r.exit_code == 0, r.output
    assert [driver_of(demo_root, a) for a in PAIR] == [None, None]


def test_a_failure_on_the_second_function_takes_the_first_back(run, demo_root: Path,
                                                              mocker) -> None:
    real = Sysfs.write_attr

    def second_refused(self: Sysfs, rel: str, value: str) -> None:
        if rel == f"bus/pci/devices/{PAIR[1]}/driver_override":
            raise KernelError("injected", errno.EIO)
        real(self, rel, value)
    mocker.patch.object(Sysfs, "write_attr", second_refused)
    r = run("--sysfs-root", demo_root, "bind", *PAIR, "pci-stub")
    assert r.exit_code == 7 and "rolled back" in r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


def test_reattach_is_rebind(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0
    r = run("--sysfs-root", demo_root, "reattach", *PAIR)
    assert r.exit_code == 0, r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


def test_define_and_undefine_dry_runs_write_nothing(run, demo_root: Path) -> None:
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci", "--group",
            "--dry-run")
    assert r.exit_code == 0 and r.output.count("Would define") == 2, r.output
    assert tree(demo_root) == before and not (demo_root / ".pcimgr-config").exists()
    r = run("--sysfs-root", demo_root, "define", "00:1f.6", "--driver", "vfio-pci", "--dry-run")
    assert r.exit_code == 4  # the same checks as for real
    assert run("--sysfs-root", demo_root, "define", "05:00.0", "--vfs", "2").exit_code == 0
    r = run("--sysfs-root", demo_root, "undefine", "05:00.0", "--dry-run")
    assert r.exit_code == 0 and "Would remove" in r.output
    assert (demo_root / ".pcimgr-config/devices/0000:05:00.0.json").exists()


def test_no_color_turns_colour_off(demo_root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    coloured = runner.invoke(cli, ["demo", "--keep", str(tmp_path / "a")], color=True)
    plain = runner.invoke(cli, ["demo", "--keep", str(tmp_path / "b")], color=True,
                          env={"NO_COLOR": "1"})
    assert "\x1b[" in coloured.output and "\x1b[" not in plain.output


def test_global_options_after_the_command(run, demo_root: Path) -> None:
    r = run("list", "--all", "--sysfs-root", demo_root, "--json")
    assert r.exit_code == 0 and '"0000:04:00.0"' in r.output
    r = run("vfs", "list", "05:00.0", f"--sysfs-root={demo_root}")
    assert r.exit_code == 0 and "82576" in r.output
    r = run("detach", "04:00.0", "--group", "-v", "--sysfs-root", demo_root)
    assert r.exit_code == 0 and "pcimgr: echo 'vfio-pci'" in r.output


def test_where_global_options_are_taken() -> None:
    from pcimgr.cli.app import globals_first
    assert globals_first(["list", "--sysfs-root", "/x", "--all"]) == [
        "--sysfs-root", "/x", "list", "--all"]
    assert globals_first(["-v", "vfs", "set", "05:00.0", "0", "--vlan", "5", "-c", "u"]) == [
        "-v", "-c", "u", "vfs", "set", "05:00.0", "0", "--vlan", "5"]
    assert globals_first(["xml", "--", "--sysfs-root"]) == ["xml", "--", "--sysfs-root"]
    assert globals_first(["--sysfs-root", "/x"]) == ["--sysfs-root", "/x"]
