"""The fleet layer takes only checked data: the Ansible modules' arguments by the CLI's own
rules (cli.rules), a persistent change whose definition write fails changes nothing, and
facts files are read bounded and checked against their documented shape before an export."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, RolledBack
from pcimgr.fleet import device, guest, vfs
from pcimgr.fleet.session import Session
from pcimgr.plans import statefile
from pcimgr.sim import builder, profiles
from tests.conftest import driver_of

REPO = Path(__file__).resolve().parents[1]
NIC = PciAddress.parse("04:00.0")
PF = PciAddress.parse("05:00.0")
NAN, INF = float("nan"), float("inf")


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    builder.build(str(root), profiles.get("demo"))
    return root


def files(root: Path) -> dict[str, str]:
    """Every file's bytes and link's target below root (not directories pcimgr makes, nor the
    lock a real run takes)."""
    return {rel: ("-> " + os.readlink(p)) if p.is_symlink() else p.read_bytes().hex()
            for p in root.rglob("*") if (p.is_file() or p.is_symlink())
            and (rel := str(p.relative_to(root))) != ".pcimgr-run/lock"}


# -- module arguments: the CLI's rules -------------------------------------------------------

CHANGES = {
    "lock_timeout nan": (lambda r: device.ensure(Session(r, lock_timeout=NAN), NIC, "vfio-pci",
                                                 False, False, False), "lock_timeout: nan"),
    "lock_timeout inf": (lambda r: device.ensure(Session(r, lock_timeout=INF), NIC, "vfio-pci",
                                                 False, False, False), "lock_timeout: inf"),
    "device timeout nan": (lambda r: device.ensure(Session(r), NIC, "vfio-pci", False, False,
                                                   False, NAN), "timeout: nan"),
    "vfs timeout nan": (lambda r: vfs.ensure(Session(r), PF, 2, "vfio-pci", [], False, False,
                                             False, NAN), "timeout: nan"),
    "vfs timeout inf": (lambda r: vfs.ensure(Session(r), PF, 2, "vfio-pci", [], False, False,
                                             False, INF), "timeout: inf"),
    "vfs vlan 4095": (lambda r: vfs.ensure(Session(r), PF, 2, "vfio-pci",
                                           [{"index": 0, "vlan": 4095}], False, False, False,
                                           30), "vlan: 4095 is not in the range 0<=x<=4094"),
    "vfs count true": (lambda r: vfs.ensure(Session(r), PF, True, "vfio-pci", [], False,
                                            False, False, 30), "count: True"),
    "guest timeout nan": (lambda r: guest.ensure(
        Session(r, connect="test:///nonexistent"), PciAddress.parse("07:00.2"), "vm1", True,
        False, False, None, None, None, None, False, False, NAN), "timeout: nan"),
    "guest mac multicast": (lambda r: guest.ensure(
        Session(r, connect="test:///nonexistent"), PciAddress.parse("07:00.2"), "vm1", True,
        False, False, "01:00:5e:00:00:01", None, None, None, False, False, 30),
        "multicast or zero"),
}


@pytest.mark.parametrize("case", CHANGES)
def test_a_module_argument_the_cli_refuses_is_bad_input_before_any_write(
        demo: Path, case: str) -> None:
    change, message = CHANGES[case]
    before = files(demo)
    with pytest.raises(BadInput, match=message):
        change(str(demo))
    assert files(demo) == before


def test_the_device_module_fails_one_line_on_a_lock_timeout_of_nan(
        demo: Path, tmp_path: Path) -> None:
    """Ansible's type float turns "nan" into a number; the module fails, exit code 2, and
    the function stays on its driver (a nan wait would have taken the lock and moved it)."""
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
        "address": "04:00.0", "sysfs_root": str(demo), "lock_timeout": "nan"}}))
    env = os.environ | {"PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-m",
                          "ansible_collections.pcimgr.host.plugins.modules.pcimgr_device",
                          str(args)], capture_output=True, text=True, env=env, timeout=120)
    out = json.loads(run.stdout)
    assert out["failed"] and out["exit_code"] == 2 and "\n" not in out["msg"]
    assert out["msg"].startswith("lock_timeout: nan is not a finite number of seconds")
    assert driver_of(demo, "0000:04:00.0") == "e1000e"


# -- a persistent change is one change ---------------------------------------------------------

def full_disk_for(config: Path, real=statefile.write):
    """statefile.write failing with ENOSPC below config (the definitions), as it is."""
    def write(path, *args, **kwargs):
        if str(path).startswith(str(config)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)
    return write


def test_a_failed_definition_write_leaves_the_driver_as_it_was(demo: Path, mocker) -> None:
    config = demo / ".pcimgr-config"
    before = files(demo)
    mocker.patch.object(statefile, "write", side_effect=full_disk_for(config))
    with pytest.raises(RolledBack) as failed:
        device.ensure(Session(str(demo)), NIC, "vfio-pci", True, True, False)
    assert driver_of(demo, "0000:04:00.0") == driver_of(demo, "0000:04:00.1") == "e1000e"
    assert files(demo) == before
    assert "No space left on device" in str(failed.value)
    assert str(failed.value).endswith("the host was not changed")


def test_a_failed_move_puts_the_definitions_back(demo: Path, mocker) -> None:
    """The definitions are written first; the move's transaction failing (its journal on a
    full state directory) takes them back out: no definition of a function not moved."""
    state = demo / ".pcimgr-state"
    state.mkdir(exist_ok=True)
    before = files(demo)
    mocker.patch.object(statefile, "write", side_effect=full_disk_for(state))
    with pytest.raises(RolledBack, match="the definitions were put back as they were"):
        device.ensure(Session(str(demo)), NIC, "vfio-pci", True, True, False)
    assert driver_of(demo, "0000:04:00.0") == "e1000e"
    assert files(demo) == before
