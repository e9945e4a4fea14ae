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
from click.testing import CliRunner

from pcimgr.cli.app import cli
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, RolledBack
from pcimgr.fleet import device, facts, guest, vfs
from pcimgr.fleet.session import Session
from pcimgr.host.names import Namer
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


def test_a_failed_vf_definition_write_leaves_the_vfs_as_they_were(demo: Path, mocker) -> None:
    before = files(demo)
    mocker.patch.object(statefile, "write",
                        side_effect=full_disk_for(demo / ".pcimgr-config"))
    with pytest.raises(RolledBack, match="the host was not changed"):
        vfs.ensure(Session(str(demo)), PF, 2, "vfio-pci", [], False, True, False, 30)
    assert (demo / "bus/pci/devices/0000:05:00.0/sriov_numvfs").read_text().strip() == "0"
    assert files(demo) == before


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


# -- facts files: read bounded, checked before any export ------------------------------------

FORMATS = ("facts", "inventory", "sriov-device-plugin", "kubevirt", "proxmox", "nova")


def pcimgr(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="pcimgr")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Facts of the demo host with a group on vfio-pci and VFs of two PFs, defined and
    applied: every pool kind an export reads."""
    root = tmp_path_factory.mktemp("facts") / "demo"
    builder.build(str(root), profiles.get("demo"))
    for args in (("define", "04:00.0", "--driver", "vfio-pci", "--group"),
                 ("define", "05:00.0", "--vfs", "4"),
                 ("define", "07:00.0", "--vfs", "2", "--vf-driver", "host"), ("apply",)):
        assert pcimgr("--sysfs-root", str(root), *args).exit_code == 0
    r = pcimgr("--sysfs-root", str(root), "export", "facts", "--host-name", "node1")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def vf_pf(data: dict) -> int:
    return next(i for i, p in enumerate(data["vfs"]) if p["vfs"])


def index_of(data: dict, address: str) -> int:
    return next(i for i, d in enumerate(data["devices"]) if d["address"] == address)


def set_path(root: dict, path: list, value) -> None:
    """path: keys and indexes, or functions of the whole facts giving an index."""
    data = root
    for key in path[:-1]:
        data = data[key(root) if callable(key) else key]
    data[path[-1]] = value


DEFINED = lambda d: index_of(d, d["definitions"][0]["address"])  # noqa: E731
# field path -> a value of the wrong shape, and the field the message names
HOSTILE = {
    "vendor id a number": (["devices", DEFINED, "vendor_id"], 8086,
                           "devices[{}].vendor_id: is a number, not a string"),
    "vendor id 5 hex digits": (["devices", DEFINED, "vendor_id"], "80861",
                               "devices[{}].vendor_id: '80861' is not 4 lower-case hex digits"),
    "device id with a quote": (["devices", DEFINED, "device_id"], '10"e',
                               "devices[{}].device_id"),
    "address not canonical": (["devices", DEFINED, "address"], "04:00.0",
                              "devices[{}].address: '04:00.0' is not a PCI address"),
    "devices an object": (["devices"], {}, "facts.devices: is an object, not a list"),
    "iommu group true": (["devices", DEFINED, "iommu_group"], True,
                         "devices[{}].iommu_group: is true/false"),
    "netdev with a slash": (["vfs", vf_pf, "netdevs"], ["eth/0"], "netdevs[0]"),
    "host with a space": (["host"], "node 1", "facts.host: 'node 1' is not a host name: letters"),
    "host with a newline": (["host"], "node1\nx", "facts.host"),
    "driver with a newline": (["definitions", 0, "driver"], "vfio-pci\n[pci]",
                              "definitions[0].driver"),
    "definition of no device": (["definitions", 0, "address"], "0000:7f:00.0",
                                "definitions[0].address: 0000:7f:00.0 is not in the facts' "
                                "devices"),
    "vf index a string": (["vfs", vf_pf, "vfs", 0, "index"], "0", ".vfs[0].index: is a string"),
    "ok null": (["definitions", 0, "ok"], None, "definitions[0].ok: is null, not true or false"),
    "not ok, no drift": (["definitions", 0, "ok"], False,
                         "definitions[0].drift: is empty although ok is false"),
    "vf count negative": (["definitions", -1, "vfs"], -1, "definitions[{d}].vfs: is a number"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", HOSTILE)
def test_facts_of_the_wrong_shape_are_bad_input_naming_file_and_field(
        good: dict, tmp_path: Path, fmt: str, case: str) -> None:
    path, value, field = HOSTILE[case]
    data = json.loads(json.dumps(good))
    set_path(data, path, value)
    f = tmp_path / "node1.json"
    f.write_text(json.dumps(data))
    r = pcimgr("export", fmt, "--facts", str(f))
    assert r.exit_code == 2, r.output
    message = r.stderr.strip()
    assert "\n" not in message and "internal error" not in message
    assert message.startswith(f"pcimgr: {f}: ")
    named = field.format(DEFINED(good), d=len(good["definitions"]) - 1)
    assert named in message, message
    assert not r.stdout


@pytest.mark.parametrize("fmt", FORMATS[2:])
def test_a_pf_whose_vf_device_id_is_unknown_is_left_out_with_a_notice(
        good: dict, tmp_path: Path, fmt: str) -> None:
    data = json.loads(json.dumps(good))
    set_path(data, ["vfs", vf_pf, "vf_device_id"], None)
    f = tmp_path / "node1.json"
    f.write_text(json.dumps(data))
    r = pcimgr("export", fmt, "--facts", str(f))
    assert r.exit_code == 0, r.output
    pf = data["vfs"][vf_pf(data)]["address"]
    assert f"pcimgr: node1: the VF device id of {pf} is unknown; left out" in r.stderr


def test_nan_and_nesting_past_the_stack_are_bad_input(good: dict, tmp_path: Path) -> None:
    f = tmp_path / "node1.json"
    f.write_text(json.dumps(good).replace('"iommu_group": 1,', '"iommu_group": NaN,', 1))
    r = pcimgr("export", "inventory", "--facts", str(f))
    assert r.exit_code == 2 and "NaN is not a JSON number" in r.stderr, r.output
    f.write_text("[" * 200000 + "]" * 200000)
    r = pcimgr("export", "inventory", "--facts", str(f))
    assert r.exit_code == 2 and "RecursionError" in r.stderr, r.output


def test_facts_larger_than_the_limit_are_refused_unread(tmp_path: Path) -> None:
    f = tmp_path / "big.json"
    f.write_text(" " * facts.MAX_BYTES + "{}")
    r = pcimgr("export", "inventory", "--facts", str(f))
    assert r.exit_code == 2
    assert r.stderr == f"pcimgr: {f} is larger than 16 MiB, the most facts of one host take; " \
                       "give the JSON `pcimgr export facts` prints\n"


@pytest.mark.parametrize("name", ["node 1", "node1\n[pci]", "-node1", "a" * 254])
def test_facts_are_gathered_only_under_a_host_name_load_takes(demo: Path, name: str) -> None:
    """pcimgr_facts' host_name: facts no export could read back are not written."""
    s = Session(str(demo))
    with pytest.raises(BadInput, match="the host name .* is not a host name"):
        facts.gather(s.machine, s.config_dir, Namer(), name)


def export_in_child(*args: str) -> subprocess.CompletedProcess:
    """pcimgr export in its own process, bounded (the old reader hung on a FIFO and read
    /dev/zero until memory ran out): a bound against a hang, not a speed check."""
    return subprocess.run([sys.executable, "-m", "pcimgr", "export", *args],
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: __import__("resource").setrlimit(
                              __import__("resource").RLIMIT_AS, (2**31, 2**31)))


def test_a_fifo_a_device_a_directory_and_a_link_are_refused_a_file_is_read(
        good: dict, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    holder = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer that never closes
    try:
        r = export_in_child("inventory", "--facts", str(fifo))
    finally:
        os.close(holder)
    assert r.returncode == 2
    assert r.stderr == (f"pcimgr: {fifo} is not a regular file; save the facts to a file "
                        "first (`pcimgr export facts > FILE`)\n")
    r = export_in_child("inventory", "--facts", "/dev/zero")
    assert r.returncode == 2 and r.stderr.startswith("pcimgr: /dev/zero is not a regular file")
    r = pcimgr("export", "inventory", "--facts", str(tmp_path))
    assert r.exit_code == 2 and r.stderr.startswith(f"pcimgr: {tmp_path} is not a regular")
    real = tmp_path / "node1.json"
    real.write_text(json.dumps(good))
    (tmp_path / "link.json").symlink_to(real)
    r = pcimgr("export", "inventory", "--facts", str(tmp_path / "link.json"))
    assert r.exit_code == 2
    assert r.stderr == (f"pcimgr: cannot read facts from {tmp_path / 'link.json'}: it is a "
                        "symbolic link; give the file it points to\n")
    # and the file itself, as pcimgr wrote it, passes every check
    assert facts.load(str(real)) == good
    for fmt in FORMATS:
        r = pcimgr("export", fmt, "--facts", str(real))
        assert r.exit_code == 0, (fmt, r.output)
