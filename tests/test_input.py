"""Input that must be refused, in one line with exit 2, before anything is written: numbers
in other scripts, out-of-range VLANs, endless timeouts, names the kernel would not take,
click's own usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tree

NOT_ASCII_DIGITS = ["٣", "３", "³", "+3", " 3", "3_0", "0x3", "-1"]


@pytest.mark.parametrize("args", [
    *[["vfs", "create", "05:00.0", n] for n in NOT_ASCII_DIGITS],
    ["vfs", "set", "05:00.0", "٠", "--mac", "52:54:00:00:00:01"],
    ["vfs", "set", "05:00.0", "0", "--vlan", "٣"],
    ["vfs", "set", "05:00.0", "0", "--vlan", "4095"],
    ["vfs", "set", "05:00.0", "0", "--vlan", "100", "--qos", "٣"],
    ["define", "05:00.0", "--vfs", "٣"],
    ["define", "05:00.0", "--vf", "0", "--vlan", "4095"],
    ["define", "05:00.0", "--vf", "٠", "--mac", "52:54:00:00:00:01"],
    ["undefine", "05:00.0", "--vf", "٠"],
    ["assign", "05:10.0", "vm1", "--vlan", "0"],
    ["assign", "05:10.0", "vm1", "--vlan", "4095"],
    ["xml", "05:10.0", "--interface", "--vlan", "٣"],
    *[["--lock-timeout", t, "detach", "04:00.0", "--group"]
      for t in ("nan", "inf", "-inf", "1e400", "-1", "3601")],
    *[["vfs", "create", "05:00.0", "2", "--timeout", t] for t in ("nan", "inf", "0")],
    ["apply", "--timeout", "NaN"],
    *[["advise", "--bridge", name] for name in ("br\x01", "b" * 16, "br 0", "br/0", "", "..")],
    ["advise", "--source-dev", "eth\x1b[31m"],
    ["xml", "--mode", "virtio", "--bridge", "br0\n<evil/>", "--mac", "52:54:00:00:00:01"],
    ["xml", "--mode", "macvtap", "--source-dev", "e" * 16, "--mac", "52:54:00:00:00:01"],
])
def test_refused_in_one_line_with_nothing_written(run, demo_root: Path,
                                                  args: list[str]) -> None:
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, *args)
    assert r.exit_code == 2, r.output
    assert r.output.count("\n") == 1 and r.output.startswith("pcimgr: "), r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    assert tree(demo_root) == before
    assert not (demo_root / ".pcimgr-config").exists()


@pytest.mark.parametrize("args,where", [
    (["frobnicate"], "pcimgr --help"),
    (["vfs", "create"], "pcimgr vfs create --help"),
    (["detach", "04:00.0", "--bogus"], "pcimgr detach --help"),
    (["vfs", "create", "05:00.0", "2", "--driver", "igbvf"], "pcimgr vfs create --help"),
    (["--lock-timeout"], "pcimgr --help"),
])
def test_usage_errors_are_one_line(run, demo_root: Path, args: list[str], where: str) -> None:
    r = run("--sysfs-root", demo_root, *args)
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and r.output.startswith("pcimgr: ")
    assert r.output.rstrip().endswith(f"see {where}")
    assert "Usage:" not in r.output and "Try " not in r.output


def test_vlan_4094_and_0_still_accepted(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "vfs", "set", "07:00.0", "0", "--vlan", "4094",
            "--dry-run")
    assert r.exit_code == 0, r.output
    r = run("--sysfs-root", demo_root, "vfs", "set", "07:00.0", "0", "--vlan", "0", "--dry-run")
    assert r.exit_code == 0, r.output


def test_interface_names_the_kernel_takes(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "xml", "--mode", "virtio", "--bridge", "b" * 15,
            "--mac", "52:54:00:00:00:01")
    assert r.exit_code == 0 and "b" * 15 in r.output


@pytest.mark.parametrize("path", ["/proc/pcimgr-x", "/dev/shm/" + "a" * 100_000,
                                  "/dev/shm/" + "a" * 300 + "/x"])
def test_sim_create_where_it_cannot(run, path: str) -> None:
    r = run("sim", "create", path)
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "internal error" not in r.output
    assert len(r.output) < 400
