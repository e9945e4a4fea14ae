"""The pcimgr.host collection run by ansible-core itself: ansible-playbook over three
simulated hosts (connection local, each its own sysfs_root), ansible-doc, ansible-galaxy;
and the desired-state logic behind the modules, in-process."""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from pcimgr.cli.app import cli
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, Refused
from pcimgr.fleet import device, guest, vfs
from pcimgr.fleet.session import Session
from pcimgr.sim import builder, profiles
from tests import libvirtd
from tests.conftest import driver_of

REPO = Path(__file__).resolve().parents[1]
COLLECTION = REPO / "ansible_collections/pcimgr/host"
PLAYBOOK = COLLECTION / "playbooks/prepare_fleet.yml"
MODULES = ("pcimgr_facts", "pcimgr_device", "pcimgr_vfs", "pcimgr_guest")

# host -> (simulated profile, its inventory variables for prepare_fleet.yml)
FLEET = {
    "node1": ("demo", {"pcimgr_passthrough": ["04:00.0"], "pcimgr_vfs": [
        {"pf": "05:00.0", "count": 4,
         "vfs": [{"index": 0, "mac": "52:54:00:5e:00:01", "vlan": 100}]}]}),
    "node2": ("lab", {"pcimgr_passthrough": ["02:01.0"], "pcimgr_vfs": [
        {"pf": "01:00.0", "count": 2,
         "vfs": [{"index": 1, "mac": "52:54:00:5e:00:12", "trust": True}]}]}),
    "node3": ("server", {"pcimgr_passthrough": ["04:00.0"]}),
}


def tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if not exe.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}; install the test "
                    "extra (pip install -e '.[test]', as scripts/run does)")
    return str(exe)


def ansible(name: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    env = os.environ | {
        "ANSIBLE_COLLECTIONS_PATH": str(REPO), "ANSIBLE_HOME": str(home / ".ansible"),
        "ANSIBLE_LOCAL_TEMP": str(home / ".ansible/tmp"), "ANSIBLE_NOCOLOR": "1",
        # the "remote" is this machine: its temporary files go where the test may write
        # (the lab guest's home is on the read-only host root)
        "ANSIBLE_REMOTE_TEMP": str(home / ".ansible/remote"),
        "ANSIBLE_PIPELINING": "1", "ANSIBLE_FORKS": "3",
        # the modules import this checkout's pcimgr, as a host imports its installed one
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    # a bound against a hang, not a speed check: in the emulated lab guest on a busy
    # two-core machine one playbook has taken over 120 s
    return subprocess.run([tool(name), *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=home)


def build_fleet(tmp_path: Path, fleet: dict) -> tuple[Path, dict[str, Path]]:
    roots = {}
    hosts = {}
    for name, (profile, variables) in fleet.items():
        roots[name] = tmp_path / name
        builder.build(str(roots[name]), profiles.get(profile))
        hosts[name] = variables | {"pcimgr_sysfs_root": str(roots[name])}
    (tmp_path / "facts").mkdir()
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"kvm_hosts": {"hosts": hosts, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "pcimgr_become": False, "pcimgr_facts_dir": str(tmp_path / "facts")}}}))
    return inventory, roots


def play(inventory: Path, *args: str,
         playbook: Path = PLAYBOOK) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a playbook; its output and PLAY RECAP as {host: {ok, changed, unreachable, failed}}."""
    r = ansible("ansible-playbook", "-i", str(inventory), str(playbook), *args,
                home=inventory.parent)
    recap = {m[0]: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m[1:]),
                            strict=True))
             for m in re.findall(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)"
                                 r"\s+failed=(\d+)", r.stdout, re.M)}
    return r, recap


def snapshot(root: Path) -> dict[str, str]:
    """Every file's bytes and link's target below root, pcimgr's state and config included,
    but the lock file (and its run directory) a real run creates before it plans."""
    return {rel: ("-> " + os.readlink(p)) if p.is_symlink() else
            p.read_bytes().hex() if p.is_file() else "dir" for p in root.rglob("*")
            if (rel := str(p.relative_to(root))) not in (".pcimgr-run", ".pcimgr-run/lock")}


def test_one_playbook_prepares_three_hosts_and_a_second_run_changes_nothing(
        tmp_path: Path) -> None:
    inventory, roots = build_fleet(tmp_path, FLEET)
    fresh = {n: snapshot(r) for n, r in roots.items()}

    r, recap = play(inventory, "--check", "--diff")
    assert r.returncode == 0, r.stdout[-3000:]
    assert all(recap[n]["changed"] >= 2 for n in FLEET), recap
    assert {n: snapshot(r) for n, r in roots.items()} == fresh  # check mode wrote nothing
    assert ('+0000:04:00.0: {"definition": "driver vfio-pci", "driver": "vfio-pci"}'
            in r.stdout)
    assert "+numvfs: 4" in r.stdout and "+numvfs: 2" in r.stdout

    r, recap = play(inventory)
    assert r.returncode == 0, r.stdout[-3000:]
    assert all(recap[n]["changed"] >= 2 and recap[n]["failed"] == 0 for n in FLEET), recap
    assert [driver_of(roots["node1"], a) for a in ("0000:04:00.0", "0000:04:00.1",
                                                  "0000:05:10.0", "0000:05:10.6")] == [
        "vfio-pci"] * 4
    assert [driver_of(roots["node2"], a) for a in ("0000:02:01.0", "0000:02:02.0",
                                                  "0000:01:10.0", "0000:01:10.2")] == [
        "vfio-pci"] * 4
    assert driver_of(roots["node3"], "0000:04:00.1") == "vfio-pci"
    facts = {n: json.loads((tmp_path / "facts" / f"{n}.json").read_text()) for n in FLEET}
    assert {n: f["host"] for n, f in facts.items()} == {n: n for n in FLEET}
    assert all(d["ok"] for f in facts.values() for d in f["definitions"])
    r2 = CliRunner().invoke(cli, ["--sysfs-root", str(roots["node2"]), "export", "facts",
                                  "--host-name", "node2"])
    assert json.loads(r2.stdout) == facts["node2"]  # the module's facts are pcimgr's
    vf1 = [vf for pf in facts["node2"]["vfs"] for vf in pf["vfs"] if vf["index"] == 1][0]
    assert (vf1["mac"], vf1["trust"]) == ("52:54:00:5e:00:12", True)
    prepared = {n: snapshot(r) for n, r in roots.items()}

    r, recap = play(inventory)
    assert r.returncode == 0, r.stdout[-3000:]
    assert all(recap[n]["changed"] == 0 for n in FLEET), recap
    assert {n: snapshot(r) for n, r in roots.items()} == prepared


def test_a_refusal_fails_that_host_only_and_changes_nothing_there(tmp_path: Path) -> None:
    """node1 asks for its management NIC (chipset group, default route): refused there, with
    pcimgr's one line; node2 and node3 are prepared."""
    fleet = FLEET | {"node1": ("demo", {"pcimgr_passthrough": ["00:1f.6"]})}
    inventory, roots = build_fleet(tmp_path, fleet)
    before = snapshot(roots["node1"])
    r, recap = play(inventory)
    assert r.returncode == 2
    assert recap["node1"]["failed"] == 1 and recap["node1"]["changed"] == 0
    assert all(recap[n]["failed"] == 0 and recap[n]["changed"] >= 2 for n in ("node2", "node3"))
    assert snapshot(roots["node1"]) == before
    assert re.search(r'"msg": "refusing: 0000:00:1f.6 shares IOMMU group 12 with 0000:00:1f.0, '
                     r'the chipset\'s ISA/LPC bridge[^\n]*not even with --group or --force"',
                     r.stdout), r.stdout[-3000:]


def test_ansible_doc_renders_every_module(tmp_path: Path) -> None:
    r = ansible("ansible-doc", "--json", *(f"pcimgr.host.{m}" for m in MODULES), home=tmp_path)
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    assert sorted(docs) == sorted(f"pcimgr.host.{m}" for m in MODULES)
    for name, entry in docs.items():
        options = entry["doc"]["options"]
        assert {"sysfs_root", "state_dir", "config_dir"} <= set(options), name  # the fragment
        assert entry["examples"].strip() and entry["return"], name
    text = ansible("ansible-doc", "pcimgr.host.pcimgr_vfs", home=tmp_path)
    assert text.returncode == 0 and "OPTIONS" in text.stdout and "spoofchk" in text.stdout


def test_the_collection_builds(tmp_path: Path) -> None:
    r = ansible("ansible-galaxy", "collection", "build", str(COLLECTION), "--output-path",
                str(tmp_path), home=tmp_path)
    assert r.returncode == 0, r.stderr
    with tarfile.open(tmp_path / "pcimgr-host-0.1.0.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"plugins/modules/{m}.py" for m in MODULES} | {
        "plugins/module_utils/pcimgr_common.py", "plugins/doc_fragments/common.py",
        "playbooks/prepare_fleet.yml", "meta/runtime.yml", "MANIFEST.json"} <= names


def test_guest_module_assigns_once_and_releases(tmp_path: Path, libvirt_uri: str,
                                                make_domain) -> None:
    vm = make_domain("ansible")
    root = tmp_path / "demo"
    builder.build(str(root), profiles.get("demo"))
    task = {"pcimgr.host.pcimgr_guest": {"address": "04:00.0", "domain": vm, "group": True,
                                         "uri": libvirt_uri, "sysfs_root": str(root)}}
    book = tmp_path / "guest.yml"
    book.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "assign", **task}, {"name": "again", **task},
        {"name": "release", "pcimgr.host.pcimgr_guest": task["pcimgr.host.pcimgr_guest"]
         | {"state": "absent"}}]}]))
    env_python = f"ansible_python_interpreter={sys.executable}"
    command = ("ansible-playbook", "-i", "localhost,", "-c", "local", "-e", env_python,
               str(book))
    r = ansible(*command, "--check", home=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]
    assert re.findall(r"^(changed|ok): \[localhost\]", r.stdout, re.M) == ["changed",
                                                                          "changed", "ok"]
    assert driver_of(root, "0000:04:00.0") == "e1000e"  # check mode: nothing moved
    assert "0x04" not in libvirtd.virsh("dumpxml", "--inactive", vm).stdout
    r = ansible(*command, home=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]
    assert re.findall(r"^(changed|ok): \[localhost\]", r.stdout, re.M) == ["changed", "ok",
                                                                          "changed"]
    assert driver_of(root, "0000:04:00.1") == "e1000e"  # given back with its group mate
    assert "0x04" not in libvirtd.virsh("dumpxml", "--inactive", vm).stdout


# -- the logic behind the modules, in-process ------------------------------------------------

@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    builder.build(str(root), profiles.get("demo"))
    return root


def test_check_mode_predicts_what_the_run_makes(demo: Path) -> None:
    pf = PciAddress.parse("05:00.0")
    settings = [{"index": 2, "mac": "52:54:00:5e:00:03", "vlan": 7, "qos": 3, "spoofchk": False}]
    planned = vfs.ensure(Session(str(demo), check_mode=True), pf, 3, "vfio-pci", settings,
                         False, True, False, 30)
    done = vfs.ensure(Session(str(demo)), pf, 3, "vfio-pci", settings, False, True, False, 30)
    assert planned.changed and done.changed and planned.after == done.after
    assert done.after["vfs"] == {2: {"mac": "52:54:00:5e:00:03", "vlan": 7, "qos": 3,
                                     "spoofchk": False}}
    pair = PciAddress.parse("04:00.0")
    planned = device.ensure(Session(str(demo), check_mode=True), pair, "pci-stub", True, False,
                            False)
    done = device.ensure(Session(str(demo)), pair, "pci-stub", True, False, False)
    assert planned.after == done.after == {a: {"driver": "pci-stub", "definition": None}
                                           for a in ("0000:04:00.0", "0000:04:00.1")}


@pytest.mark.parametrize("count,settings,error,message", [
    (2, [{"index": 2, "mac": "52:54:00:5e:00:03"}], BadInput, "VF 2 does not exist with 2"),
    (2, [{"index": 0, "qos": 3}], BadInput, "give vlan with it"),
    (2, [{"index": 0, "mac": "01:00:5e:00:00:01"}], BadInput, "multicast or zero"),
    (2, [{"index": 0}], BadInput, "nothing to set for VF 0"),
    (9, [], BadInput, "supports at most 7 VFs under igb"),
    (-1, [], BadInput, "count: -1 is not in the range 0<=x<=65535"),
    (2, [{"index": 0, "vlan": 4095}], BadInput, "VF 0: vlan: 4095 is not in the range 0<=x<=4094"),
    (2, [{"index": True, "mac": "52:54:00:5e:00:03"}], BadInput, "True is not a whole number"),
    (2, [{"index": 0, "vlan": 5, "qos": 8}], BadInput, "VF 0: qos: 8 is not in the range 0<=x<=7"),
])
def test_vfs_refusals_come_before_any_write(demo: Path, count: int, settings: list,
                                            error: type, message: str) -> None:
    before = snapshot(demo)
    with pytest.raises(error, match=message):
        vfs.ensure(Session(str(demo)), PciAddress.parse("05:00.0"), count, "vfio-pci",
                   settings, False, True, False, 30)
    assert snapshot(demo) == before


def test_a_persistent_change_is_refused_whole_when_its_definition_would_be(
        tmp_path: Path) -> None:
    """force moves a function the host uses (the server's virtio NIC with the default
    route), but a definition is never forced: nothing is written, not even the move."""
    root = tmp_path / "server"
    builder.build(str(root), profiles.get("server"))
    before = snapshot(root)
    with pytest.raises(Refused, match="refusing to define: 0000:00:03.0: interface eth0"):
        device.ensure(Session(str(root)), PciAddress.parse("00:03.0"), "vfio-pci", False,
                      True, True)
    assert snapshot(root) == before
    moved = device.ensure(Session(str(root)), PciAddress.parse("00:03.0"), "vfio-pci", False,
                          False, True)
    assert moved.after["0000:00:03.0"]["driver"] == "vfio-pci"


def test_giving_back_undefines_and_count_zero_forgets_the_vfs(demo: Path) -> None:
    pair, pf = PciAddress.parse("04:00.0"), PciAddress.parse("05:00.0")
    device.ensure(Session(str(demo)), pair, "vfio-pci", True, True, False)
    vfs.ensure(Session(str(demo)), pf, 2, "vfio-pci", [], False, True, False, 30)
    back = device.ensure(Session(str(demo)), pair, "host", True, True, False)
    assert back.after == {a: {"driver": "e1000e", "definition": None}
                          for a in ("0000:04:00.0", "0000:04:00.1")}
    gone = vfs.ensure(Session(str(demo)), pf, 0, "vfio-pci", [], False, True, False, 30)
    assert gone.after == {"numvfs": 0, "vf_driver": None, "vfs": {}, "definition": None}
    assert not any((demo / ".pcimgr-config/devices").iterdir())
    again = vfs.ensure(Session(str(demo)), pf, 0, "vfio-pci", [], False, True, False, 30)
    assert not again.changed


def test_a_guest_vlan_out_of_range_is_bad_input_before_libvirt_is_asked(demo: Path) -> None:
    with pytest.raises(BadInput, match="vlan: 5000 is not in the range 1<=x<=4094"):
        guest.ensure(Session(str(demo), connect="test:///nonexistent"),
                     PciAddress.parse("07:00.2"), "vm1", True, False, False,
                     "52:54:00:6b:3c:09", 5000, None, None, False, False, 30)
