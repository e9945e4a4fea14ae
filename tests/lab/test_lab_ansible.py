"""The fleet playbook on the real kernel (issue 15): the igb PF's VFs and the e1000 pair
prepared by ansible-playbook through the pcimgr.host modules, a second run that changes
nothing, the device plugin's pool from the gathered facts, and everything given back by
the modules."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pcimgr.cli.app import cli
from tests.lab.test_lab_kernel import E1000, by_hand_back, driver
from tests.lab.test_lab_persist import PF, PF_DIR, vfs_on_vfio
from tests.test_ansible import play

pytestmark = pytest.mark.lab

HOST = {"pcimgr_passthrough": [E1000[0]],
        "pcimgr_vfs": [{"pf": PF, "count": 2, "pf_up": True,
                        "vfs": [{"index": 0, "mac": "52:54:00:5e:00:01", "vlan": 100}]}]}
GIVE_BACK = [{"hosts": "kvm_hosts", "gather_facts": False, "tasks": [
    {"name": "The e1000 pair back to e1000, undefined",
     "pcimgr.host.pcimgr_device": {"address": E1000[0], "driver": "host", "group": True,
                                   "persistent": True}},
    {"name": "No VFs, undefined",
     "pcimgr.host.pcimgr_vfs": {"pf": PF, "count": 0, "persistent": True}}]}]


@pytest.fixture
def inventory(tmp_path: Path) -> Iterator[Path]:
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    (tmp_path / "facts").mkdir()
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps({"kvm_hosts": {"hosts": {"lab": HOST}, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "pcimgr_become": False, "pcimgr_facts_dir": str(tmp_path / "facts")}}}))
    yield path
    (PF_DIR / "sriov_numvfs").write_text("0")
    (PF_DIR / "sriov_drivers_autoprobe").write_text("1")
    subprocess.run(["ip", "link", "set", "enp1s0", "down"], check=True)
    for address in E1000:
        if driver(address) != "e1000":
            by_hand_back(address)
    for address in (PF, *E1000):
        CliRunner().invoke(cli, ["undefine", address])


def vf_settings(index: int) -> dict:
    r = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", "enp1s0"], capture_output=True,
                       text=True, check=True)
    vf = json.loads(r.stdout)[0]["vfinfo_list"][index]
    return {"mac": vf["address"], "vlan": vf["vlan_list"][0].get("vlan")}


def test_the_fleet_playbook_prepares_the_lab_and_a_second_run_changes_nothing(
        inventory: Path) -> None:
    r, recap = play(inventory, "--check", "--diff")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert recap["lab"]["changed"] >= 2
    assert [driver(a) for a in E1000] == ["e1000", "e1000"]  # check mode: nothing moved
    assert (PF_DIR / "sriov_numvfs").read_text().strip() == "0"

    r, recap = play(inventory)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert recap["lab"]["changed"] >= 2 and recap["lab"]["failed"] == 0
    assert [driver(a) for a in E1000] == ["vfio-pci", "vfio-pci"]
    assert vfs_on_vfio() == ["vfio-pci", "vfio-pci"]
    assert vf_settings(0) == {"mac": "52:54:00:5e:00:01", "vlan": 100}
    link = json.loads(subprocess.run(["ip", "-j", "link", "show", "dev", "enp1s0"],
                                     capture_output=True, text=True, check=True).stdout)[0]
    assert "UP" in link["flags"]  # pf_up brought the PF up before the VFs were made

    r, recap = play(inventory)
    assert r.returncode == 0 and recap["lab"]["changed"] == 0, r.stdout[-3000:] + r.stderr[-3000:]

    facts = inventory.parent / "facts/lab.json"
    exported = CliRunner().invoke(cli, ["export", "sriov-device-plugin", "--facts", str(facts)])
    assert exported.exit_code == 0, exported.output
    pools = {p["resourceName"]: p["selectors"] for p in json.loads(exported.stdout)["resourceList"]}
    assert pools["sriov_8086_10ca_vfio"]["pfNames"] == ["enp1s0#0-1"]
    assert pools["pci_8086_100e_vfio"]["pciAddresses"] == list(E1000)

    back = inventory.parent / "give_back.json"
    back.write_text(json.dumps(GIVE_BACK))
    r, recap = play(inventory, playbook=back)
    assert r.returncode == 0 and recap["lab"]["changed"] == 2, r.stdout[-3000:] + r.stderr[-3000:]
    assert [driver(a) for a in E1000] == ["e1000", "e1000"]
    assert (PF_DIR / "sriov_numvfs").read_text().strip() == "0"
    status = CliRunner().invoke(cli, ["status", "--json"])
    assert json.loads(status.stdout) == []
