"""The commands as a user meets them: output, JSON and exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import golden
from tests.test_address import BAD


def test_list_shows_network_functions_with_vfs_under_pf(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "list")
    assert r.exit_code == 0, r.output
    golden("list_demo.txt", r.output)
    lines = r.output.splitlines()
    assert lines[0].split()[:3] == ["ADDRESS", "DEVICE", "DRIVER"]
    pf = next(i for i, line in enumerate(lines) if line.startswith("0000:07:00.0"))
    assert lines[pf + 1].startswith("  0000:07:00.2") and "VF of 07:00.0" in lines[pf + 1]
    assert "0000:02:00.0" not in r.output  # the NVMe is not a network function
    assert "82571EB/82571GB Gigabit Ethernet Controller… [8086:105e]" in r.output


def test_list_json_golden(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "list", "--json")
    assert r.exit_code == 0
    golden("list_demo.json", r.output)
    entries = json.loads(r.output)
    required = {"address", "vendor_id", "device_id", "vendor", "device", "class", "driver",
                "iommu_group", "numa_node", "netdevs", "sriov", "physfn"}
    assert all(required <= set(e) for e in entries)
    nic = next(e for e in entries if e["address"] == "0000:04:00.0")
    assert (nic["vendor_id"], nic["device_id"], nic["class"], nic["iommu_group"]) == (
        "8086", "105e", "020000", 5)


def test_list_all_json_golden(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "list", "--all", "--json")
    golden("list_all_demo.json", r.output)
    assert len(json.loads(r.output)) == len(os.listdir(demo_root / "bus/pci/devices"))


@pytest.mark.parametrize("args,expected", [
    (["--class", "storage"], ["0000:02:00.0"]),
    (["--class", "0c05"], ["0000:00:1f.4"]),
    (["--class", "display"], ["0000:00:02.0", "0000:01:00.0"]),
    (["--vendor", "15b3"], ["0000:07:00.0", "0000:07:00.2", "0000:07:00.3"]),
    (["--vendor", "mellanox"], ["0000:07:00.0", "0000:07:00.2", "0000:07:00.3"]),
    (["--all", "--driver", "none"], ["0000:00:1f.0"]),
    (["--driver", "igb"], ["0000:05:00.0"]),
    (["--all", "--vendor", "10de"], ["0000:01:00.0", "0000:01:00.1"]),
])
def test_list_filters(run, demo_root: Path, args: list[str], expected: list[str]) -> None:
    r = run("--sysfs-root", demo_root, "list", "--json", *args)
    assert r.exit_code == 0, r.output
    assert [e["address"] for e in json.loads(r.output)] == expected


@pytest.mark.parametrize("args", [["--class", "warp"], ["--class", "0xzz"], ["--driver", "../x"]])
def test_list_bad_filters(run, demo_root: Path, args: list[str]) -> None:
    r = run("--sysfs-root", demo_root, "list", *args)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1


def test_iommu_off_notice(run, make_host) -> None:
    root = make_host("demo", iommu=False)
    r = run("--sysfs-root", root, "list")
    assert r.exit_code == 0
    assert r.output.splitlines()[0].startswith("pcimgr: note: IOMMU is off")
    assert "intel_iommu=on" in r.output.splitlines()[0]
    assert r.output.splitlines()[1].startswith("ADDRESS")
    assert json.loads(run("--sysfs-root", root, "list", "--json").output)[0]["iommu_group"] is None
    assert "intel_iommu=on" in run("--sysfs-root", root, "groups").output


def test_show(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "show", "pci_0000_04_00_0")
    assert r.exit_code == 0
    golden("show_04_00_0.txt", r.output)
    assert "IOMMU group 5: not viable" in r.output
    assert "0000:04:00.1  e1000e" in r.output
    assert "<address domain=\"0x0000\" bus=\"0x04\" slot=\"0x00\" function=\"0x0\" />" in r.output


def test_show_json(run, demo_root: Path) -> None:
    doc = json.loads(run("--sysfs-root", demo_root, "show", "05:00.0", "--json").output)
    assert doc["address"] == "0000:05:00.0" and doc["sriov"]["totalvfs"] == 7
    assert doc["group"]["group"] == 7 and doc["group"]["viable"] is False
    assert doc["group"]["members"][0]["driver"] == "igb"
    assert "bus=\"0x05\"" in doc["hostdev_xml"]


def test_groups(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "groups")
    assert r.exit_code == 0
    golden("groups_demo.txt", r.output)
    doc = json.loads(run("--sysfs-root", demo_root, "groups", "--json").output)
    by_number = {g["group"]: g for g in doc}
    assert by_number[5]["viable"] is False
    assert by_number[5]["blockers"] == ["0000:04:00.0", "0000:04:00.1"]
    assert by_number[4]["viable"] is True  # only a root port
    assert by_number[4]["members"][0]["is_bridge"] is True


def test_xml(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "xml", "0000:04:00.1")
    assert r.exit_code == 0
    golden("hostdev_04_00_1.xml", r.output)
    r = run("--sysfs-root", demo_root, "xml", "04:00.1", "--unmanaged")
    assert 'managed="no"' in r.output


@pytest.mark.parametrize("command", ["show", "xml"])
@pytest.mark.parametrize("text", [t for t in BAD if t and not t.startswith("-")])
def test_bad_address_one_line_exit_2(run, demo_root: Path, command: str, text: str) -> None:
    r = run("--sysfs-root", demo_root, command, text)
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "pci_0000_04_00_0" in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("command", ["show", "xml"])
def test_unknown_address_exit_3(run, demo_root: Path, command: str) -> None:
    r = run("--sysfs-root", demo_root, command, "0000:09:00.0")
    assert r.exit_code == 3
    assert r.output == ("pcimgr: no PCI function 0000:09:00.0 on this host; "
                        "`pcimgr list --all` shows the functions there are\n")


def test_missing_sysfs_root(run, tmp_path: Path) -> None:
    r = run("--sysfs-root", tmp_path / "nowhere", "list")
    assert r.exit_code == 3 and "pcimgr sim create" in r.output


def test_sysfs_root_from_environment(demo_root: Path) -> None:
    from click.testing import CliRunner

    from pcimgr.cli.app import cli
    r = CliRunner().invoke(cli, ["list", "--json"], env={"PCIMGR_SYSFS_ROOT": str(demo_root)})
    assert len(json.loads(r.output)) == 8


def test_sim_create_refuses_non_empty_directory(run, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep me")
    r = run("sim", "create", tmp_path / "x")
    assert r.exit_code == 2 and (tmp_path / "x" / "file").read_text() == "keep me"
    assert os.listdir(tmp_path / "x") == ["file"]


def test_sim_create_and_unknown_profile(run, tmp_path: Path) -> None:
    r = run("sim", "create", tmp_path / "lab", "--profile", "lab")
    assert r.exit_code == 0
    assert (tmp_path / "lab/bus/pci/devices/0000:01:00.0").is_symlink()
    r = run("sim", "create", tmp_path / "x", "--profile", "nope")
    assert r.exit_code == 3 and not (tmp_path / "x").exists()
    assert "choose one of demo, desktop, lab, mdev, modern, server or scale:PFSxVFS" in r.output
    names = [line.split()[0] for line in run("sim", "profiles").output.splitlines()]
    assert names == ["demo", "desktop", "lab", "mdev", "modern", "server", "scale:PFSxVFS"]
    assert [p["name"] for p in json.loads(run("sim", "profiles", "--json").output)] == names


def test_demo_walks_through_the_commands(run, tmp_path: Path) -> None:
    r = run("demo", "--keep", tmp_path / "d")
    assert r.exit_code == 0, r.output
    for cmd in ("$ pcimgr list", "$ pcimgr groups", "$ pcimgr show 04:00.0",
                "$ pcimgr xml 04:00.0"):
        assert cmd in r.output
    assert "IOMMU group 5: not viable" in r.output
    assert "shares IOMMU group 5 with 0000:04:00.1" in r.output
    assert "not even with --group or --force" in r.output
    assert "IOMMU group 5 is viable for VFIO (/dev/vfio/5)" in r.output
    assert "0000:04:00.1: vfio-pci -> e1000e" in r.output
    # SR-IOV, guests, the host check, advice and definitions
    assert "0000:05:10.4  vfio-pci" in r.output
    assert "52:54:00:5e:00:01  100" in r.output
    assert "at most 7 VFs under igb" in r.output
    assert "3. 0000:04:00.0: attach to test (running guest and persistent config)" in r.output
    assert "Passthrough can work on this host." in r.output
    assert "Recommended: sr-iov" in r.output
    assert "- driver is e1000e, defined vfio-pci" in r.output
    assert (tmp_path / "d/bus/pci/devices/0000:04:00.0").is_symlink()
    link = os.readlink(tmp_path / "d/bus/pci/devices/0000:04:00.0/driver")
    assert os.path.basename(link) == "e1000e"


def test_internal_error_is_one_line(run, demo_root: Path, mocker) -> None:
    mocker.patch("pcimgr.host.discovery.scan", side_effect=RuntimeError("boom"))
    r = run("--sysfs-root", demo_root, "list")
    assert r.exit_code == 1
    assert r.output == "pcimgr: internal error: RuntimeError: boom (run with -v for details)\n"


def test_read_commands_do_not_import_libvirt_or_pyudev(demo_root: Path) -> None:
    code = ("import sys; from pcimgr.cli.app import main\n"
            "try:\n    main(['--sysfs-root', sys.argv[1], 'list'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('libvirt', 'pyudev') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(demo_root)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_broken_pipe_is_quiet(demo_root: Path) -> None:
    p = subprocess.run(f"{sys.executable} -m pcimgr --sysfs-root {demo_root} list --all | head -1",
                       shell=True, capture_output=True, text=True)
    assert p.stdout.startswith("ADDRESS") and p.stderr == ""


def test_every_command_is_found_by_its_module() -> None:
    """The lazy loader's table and the commands the modules define agree: each entry names
    a click command of that name, and no command module defines a top-level one the table
    lacks."""
    import importlib
    import pkgutil

    import click

    from pcimgr.cli import app, commands
    assert all(app.load_command(name).name in (name, name.replace("-", "_"))
               for name in app.COMMANDS)
    defined = set()
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"pcimgr.cli.commands.{info.name}")
        found = {attr: value for attr, value in vars(module).items()
                 if isinstance(value, click.Command)
                 and getattr(value.callback, "__module__", None) == module.__name__}
        inside = {id(c) for g in found.values() if isinstance(g, click.Group)
                  for c in g.commands.values()}
        defined |= {f"{info.name}:{attr}" for attr, value in found.items()
                    if id(value) not in inside}
    assert defined == set(app.COMMANDS.values())
