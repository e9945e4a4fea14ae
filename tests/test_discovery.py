import json
import os
from pathlib import Path

import pytest

from pcimgr.core.address import PciAddress
from pcimgr.core.viability import viability
from pcimgr.host import discovery
from pcimgr.host.sysfs import Sysfs
from pcimgr.sim.machine import SimulatedMachine

A = PciAddress.parse


def test_demo_host_functions(demo_sysfs: Sysfs) -> None:
    host = discovery.scan(demo_sysfs)
    nic = host.get(A("04:00.0"))
    assert nic is not None
    assert (nic.vendor_id, nic.device_id, nic.class_code, nic.driver) == ("8086", "105e",
                                                                          0x020000, "e1000e")
    assert (nic.subsystem_vendor_id, nic.subsystem_device_id, nic.revision) == ("8086", "115e",
                                                                                "06")
    assert (nic.iommu_group, nic.numa_node, nic.netdevs) == (5, 0, ("enp4s0f0",))
    assert nic.driver_override is None and nic.sriov is None and nic.physfn is None
    assert host.iommu_enabled


def test_sriov_pf_and_vfs(demo_sysfs: Sysfs) -> None:
    host = discovery.scan(demo_sysfs)
    pf = host.get(A("07:00.0"))
    assert pf is not None and pf.sriov is not None
    assert (pf.sriov.totalvfs, pf.sriov.numvfs, pf.sriov.vf_device_id) == (8, 2, "1018")
    assert pf.sriov.vfs == (A("07:00.2"), A("07:00.3"))
    assert pf.sriov.drivers_autoprobe is True
    vf = host.get(A("07:00.3"))
    assert vf is not None and vf.physfn == A("07:00.0") and vf.netdevs == ("enp7s0f0np0v1",)


def test_vfs_listed_in_virtfn_index_order_past_ten(make_host) -> None:  # type: ignore[no-untyped-def]
    sysfs = SimulatedMachine(str(make_host("scale:1x12"))).sysfs
    pf = next(d for d in discovery.scan(sysfs).devices if d.sriov)
    assert [v.function + 8 * (v.slot - 0x10) for v in pf.sriov.vfs] == list(range(12))


def test_groups_and_viability(demo_sysfs: Sysfs) -> None:
    host = discovery.scan(demo_sysfs)
    pair = host.groups[5]
    assert [str(m.address) for m in pair.members] == ["0000:04:00.0", "0000:04:00.1"]
    v = viability(pair)
    assert not v.viable and len(v.blockers) == 2
    # the root port (pcieport) in group 4 does not count
    assert viability(host.groups[4]).viable


def test_viability_follows_drivers(demo_sysfs: Sysfs) -> None:
    for nic in ("0000:04:00.0", "0000:04:00.1"):
        demo_sysfs.write_attr(f"bus/pci/devices/{nic}/driver_override", "vfio-pci")
        demo_sysfs.write_attr("bus/pci/drivers/e1000e/unbind", nic)
        host = discovery.scan(demo_sysfs)
        demo_sysfs.write_attr("bus/pci/drivers_probe", nic)
        # an unbound endpoint does not block: after the first unbind one blocker is left
        assert [str(b.address) for b in viability(host.groups[5]).blockers] == (
            ["0000:04:00.1"] if nic.endswith("0") else [])
    assert viability(discovery.scan(demo_sysfs).groups[5]).viable


def test_no_iommu(make_host) -> None:  # type: ignore[no-untyped-def]
    host = discovery.scan(SimulatedMachine(str(make_host("demo", iommu=False))).sysfs)
    assert not host.iommu_enabled and host.groups == {}
    assert all(d.iommu_group is None for d in host.devices)


def test_function_vanishing_mid_scan_is_skipped(demo_sysfs: Sysfs, mocker) -> None:  # type: ignore[no-untyped-def]
    real = demo_sysfs.list_dir
    ghost = "0000:0a:00.0"

    def listing(rel: str) -> list[str]:
        names = real(rel)
        return names + [ghost] if rel == "bus/pci/devices" else names

    mocker.patch.object(demo_sysfs, "list_dir", side_effect=listing)
    host = discovery.scan(demo_sysfs)
    assert host.get(A(ghost)) is None
    assert len(host.devices) == len(real("bus/pci/devices"))


def test_function_losing_attributes_mid_read_is_skipped(demo_root: Path, demo_sysfs: Sysfs) -> None:
    (demo_root / "bus/pci/devices/0000:04:00.1/uevent").unlink()
    host = discovery.scan(demo_sysfs)
    assert host.get(A("04:00.1")) is None and host.get(A("04:00.0")) is not None


def test_each_attribute_read_once(demo_sysfs: Sysfs, mocker) -> None:  # type: ignore[no-untyped-def]
    opened: list[str] = []
    real_open = os.open

    def spy(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(str(path))
        return real_open(path, flags, *args, **kwargs)

    mocker.patch("pcimgr.host.sysfs.os.open", side_effect=spy)
    discovery.scan(demo_sysfs)
    assert opened.count("uevent") == len(demo_sysfs.list_dir("bus/pci/devices"))


@pytest.mark.skipif(not os.path.isdir("/sys/bus/pci/devices"), reason="no PCI sysfs here")
def test_real_sys_read_only(run) -> None:  # type: ignore[no-untyped-def]
    r = run("list", "--all", "--json")
    assert r.exit_code == 0, r.output
    listed = [e["address"] for e in json.loads(r.output)]
    assert listed == sorted(os.listdir("/sys/bus/pci/devices"))
