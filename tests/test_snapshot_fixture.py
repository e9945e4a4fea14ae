"""The lab guest as a snapshot (tests/lab/fixtures/lab-guest.pcimgr-snapshot.tar.gz, taken by
`python -m tests.lab.refresh snapshot` on the real Linux 6.1 guest): the readers answer
from it as recorded (goldens), and the `lab` simulated profile agrees with it (issue 24)."""

import json
from pathlib import Path

import pytest

from tests.conftest import golden

FIXTURE = Path(__file__).parent / "lab/fixtures/lab-guest.pcimgr-snapshot.tar.gz"
COMPARED = ("vendor_id", "device_id", "class", "driver", "iommu_group", "netdevs", "physfn",
            "numa_node", "sriov")


@pytest.mark.parametrize("args", [("list", "--all", "--json"), ("groups", "--json"),
                                  ("tree", "--json")], ids=lambda a: a[0])
def test_the_lab_guest_read_from_its_snapshot(run, args) -> None:
    r = run("--snapshot", FIXTURE, *args)
    assert r.exit_code == 0, r.output
    golden(f"lab-snapshot-{args[0]}.json", r.stdout)


def test_the_lab_profile_is_the_lab_guest(run, make_host) -> None:
    """What the real kernel laid out, the simulator lays out: every function, its ids,
    driver, group, interfaces and SR-IOV capability."""
    real = {d["address"]: d for d in json.loads(
        run("--snapshot", FIXTURE, "list", "--all", "--json").stdout)}
    simulated = {d["address"]: d for d in json.loads(
        run("--sysfs-root", make_host("lab"), "list", "--all", "--json").stdout)}
    assert sorted(simulated) == sorted(real)
    for address, device in real.items():
        assert {k: simulated[address].get(k) for k in COMPARED} == \
            {k: device.get(k) for k in COMPARED}, address
