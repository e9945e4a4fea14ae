import errno
from pathlib import Path

import pytest

from pcimgr.cli.context import Context
from pcimgr.core.errors import BadInput, KernelError
from pcimgr.host.linux import LinuxMachine
from pcimgr.host.readonly import ReadOnlyMachine
from pcimgr.host.sysfs import Gone, Sysfs
from pcimgr.sim.machine import SimulatedMachine


@pytest.mark.parametrize("rel", ["../etc/passwd", "/etc/passwd", "bus/../../x"])
def test_paths_outside_the_root_are_refused(demo_sysfs: Sysfs, rel: str) -> None:
    with pytest.raises(BadInput):
        demo_sysfs.read_attr(rel)
    with pytest.raises(BadInput):
        demo_sysfs.write_attr(rel, "x")


def machine(root: str) -> object:
    """The machine the command line chooses for a --sysfs-root."""
    return Context(root, None, 30.0, None).machine


def test_simulation_needs_the_marker(tmp_path: Path, demo_root: Path) -> None:
    assert isinstance(machine(str(demo_root)), SimulatedMachine)
    assert machine(str(demo_root)).sysfs.dev_root == str(demo_root / "dev")
    (tmp_path / "bus/pci/devices").mkdir(parents=True)
    assert isinstance(machine(str(tmp_path)), ReadOnlyMachine)  # foreign: never this host
    assert isinstance(machine("/sys"), LinuxMachine) and machine("/sys").sysfs.dev_root == "/dev"


def test_real_root_never_simulated_even_with_marker(monkeypatch) -> None:
    monkeypatch.setattr("pcimgr.sim.marker.is_simulated", lambda root: True)
    assert isinstance(machine("/sys"), LinuxMachine)


def test_plain_tree_write_is_a_plain_write(tmp_path: Path) -> None:
    (tmp_path / "attr").write_text("old-and-longer\n")
    Sysfs(str(tmp_path)).write_attr("attr", "new\n")
    assert (tmp_path / "attr").read_text() == "new\n"


def test_write_errors_carry_errno_and_path(tmp_path: Path) -> None:
    with pytest.raises(KernelError) as e:
        Sysfs(str(tmp_path)).write_attr("missing", "1")
    assert e.value.errno == errno.ENOENT and str(tmp_path / "missing") in str(e.value)


def test_reads_of_missing_things(demo_sysfs: Sysfs) -> None:
    assert demo_sysfs.read_attr("bus/pci/devices/0000:04:00.0/nope") is None
    assert demo_sysfs.read_attr("bus/pci/devices/0000:04:00.0") is None  # a directory
    assert demo_sysfs.read_link("bus/pci/devices/0000:04:00.0/vendor") is None
    assert demo_sysfs.list_dir("nope") == []
    with pytest.raises(Gone):
        demo_sysfs.directory("bus/pci/devices/0000:0a:00.0")
    with demo_sysfs.directory("bus/pci/devices/0000:04:00.0") as d:
        assert d.read("nope") is None and d.link("nope") is None and d.list("nope") is None
        assert d.read("net") is None  # a directory is not an attribute
        assert d.list("net") == ["enp4s0f0"]
        assert d.link("driver") == "../../../../bus/pci/drivers/e1000e"
