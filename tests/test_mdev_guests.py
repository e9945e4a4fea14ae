"""assign/release of mdevs against a real libvirtd (qemu:///system), on the simulated
'mdev' host: the <hostdev type='mdev'> in the domain's persistent configuration, the holder
shown by `mdev list`, the refusals. A running guest with an mdev is the lab's
(tests/lab/test_lab_mdev.py)."""

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import libvirtd
from tests.test_mdev import U1, U2, create


@pytest.fixture
def root(make_host: Callable[..., Path]) -> Path:
    return make_host("mdev")


def mdev_hostdevs(domain: str) -> list[tuple[str | None, str | None]]:
    r = libvirtd.virsh("dumpxml", "--inactive", domain)
    assert r.returncode == 0, r.stderr
    return [(e.get("model"), e.find("./source/address").get("uuid"))  # type: ignore[union-attr]
            for e in ET.fromstring(r.stdout).findall("./devices/hostdev[@type='mdev']")]


def test_assign_and_release_an_mdev(run, root: Path, libvirt_uri, make_domain) -> None:
    vm = make_domain("mdev")
    assert create(run, root, "mtty", "mtty-2").exit_code == 0
    dry = run("--sysfs-root", root, "--connect", libvirt_uri, "assign", U1, vm, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"{U1}: attach to {vm} (persistent config)" in dry.output
    assert f'<address uuid="{U1}" />' in dry.output and mdev_hostdevs(vm) == []
    r = run("--sysfs-root", root, "--connect", libvirt_uri, "assign", U1, vm)
    assert r.exit_code == 0, r.output
    assert "has no definition, so after a reboot" in r.output
    assert mdev_hostdevs(vm) == [("vfio-pci", U1)]
    listed = json.loads(run("--sysfs-root", root, "--connect", libvirt_uri, "mdev", "list",
                            "--json").output)
    assert listed[0]["guests"] == [vm]
    # a guest's mdev is not removed under it
    refused = run("--sysfs-root", root, "--connect", libvirt_uri, "mdev", "remove", U1)
    assert refused.exit_code == 4 and f"assigned to guests: {U1} ({vm})" in refused.output
    other = make_domain("other")
    again = run("--sysfs-root", root, "--connect", libvirt_uri, "assign", U1, other)
    assert again.exit_code == 4 and f"is assigned to {vm} already" in again.output
    assert mdev_hostdevs(other) == []

    released = run("--sysfs-root", root, "--connect", libvirt_uri, "release", U1)
    assert released.exit_code == 0, released.output
    assert f"{U1}: detach from {vm} (persistent config)" in released.output
    assert mdev_hostdevs(vm) == []
    assert (root / "bus/mdev/devices" / U1).exists()  # release keeps the mdev
    gone = run("--sysfs-root", root, "--connect", libvirt_uri, "mdev", "remove", U1)
    assert gone.exit_code == 0, gone.output


def test_assign_of_an_mdev_that_is_not_there(run, root: Path, libvirt_uri,
                                             make_domain) -> None:
    vm = make_domain("none")
    r = run("--sysfs-root", root, "--connect", libvirt_uri, "assign", U2, vm)
    assert r.exit_code == 3 and f"no mdev {U2}" in r.output
    assert mdev_hostdevs(vm) == []
    flags = run("--sysfs-root", root, "--connect", libvirt_uri, "assign", U2, vm, "--group")
    assert flags.exit_code == 2 and "are for PCI functions" in flags.output
