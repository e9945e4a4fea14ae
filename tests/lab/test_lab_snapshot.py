"""A snapshot of the real guest reads back as the guest (issue 24): every read command on
`--snapshot FILE` answers as it does on the live /sys, host use included, inside the lab."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli.app import cli

pytestmark = pytest.mark.lab

READS = (("list", "--all", "--json"), ("groups", "--json"), ("tree", "--json"),
         ("status", "--json"), ("vfs", "list", "--json"))


def pcimgr(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_a_snapshot_of_the_guest_reads_back_as_the_guest(tmp_path: Path) -> None:
    out = tmp_path / "guest.pcimgr-snapshot.tar.gz"
    r = pcimgr("snapshot", str(out))
    assert r.exit_code == 0, r.output
    functions = sorted(os.listdir("/sys/bus/pci/devices"))
    assert f"{len(functions)} PCI functions" in r.output
    # show, not xml too: the XML is the address and driver, which list compares already
    for args in (*READS, *(("show", a, "--json") for a in functions)):
        live, recorded = pcimgr(*args), pcimgr("--snapshot", str(out), *args)
        assert (recorded.exit_code, recorded.stdout) == (live.exit_code, live.stdout), args
    # the host's own uses are the recorded ones: the virtio NIC's route, the mounted disks
    listed = json.loads(pcimgr("--snapshot", str(out), "list", "--all", "--json").stdout)
    assert any(u for d in listed for u in d["host_use"])
    live = json.loads(pcimgr("doctor", "--json").stdout)["checks"]
    recorded = json.loads(pcimgr("--snapshot", str(out), "doctor", "--json").stdout)["checks"]
    skip = {"libvirt", "root"}
    assert [c for c in recorded if c["name"] not in skip] == \
        [c for c in live if c["name"] not in skip]
    r = pcimgr("--snapshot", str(out), "detach", functions[-1])
    assert r.exit_code == 4 and "read only" in r.output, r.output
