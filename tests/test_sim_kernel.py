"""The simulated kernel answers writes as Linux 6.1 does (tests/lab holds it to a real one)."""

import errno
import os
from pathlib import Path

import pytest

from pcimgr.core.errors import KernelError
from pcimgr.host.sysfs import Sysfs
from pcimgr.sim.machine import SimulatedMachine
from tests.conftest import driver_of

PF = "0000:05:00.0"   # 82576, igb, offset 128, stride 2
NIC0, NIC1 = "0000:04:00.0", "0000:04:00.1"


def errno_of(sysfs: Sysfs, rel: str, value: str) -> int | None:
    try:
        sysfs.write_attr(rel, value)
    except KernelError as e:
        return e.errno
    return None


def bind_vfio(sysfs: Sysfs, address: str) -> None:
    sysfs.write_attr(f"bus/pci/devices/{address}/driver_override", "vfio-pci")
    driver = os.path.basename(sysfs.read_link(f"bus/pci/devices/{address}/driver") or "")
    if driver:
        sysfs.write_attr(f"bus/pci/drivers/{driver}/unbind", address)
    sysfs.write_attr("bus/pci/drivers_probe", address)


def test_driver_override_reads_null_when_unset_and_clears_on_empty_line(demo_sysfs: Sysfs) -> None:
    attr = f"bus/pci/devices/{NIC0}/driver_override"
    assert demo_sysfs.read_attr(attr) == "(null)"
    demo_sysfs.write_attr(attr, "vfio-pci\n")
    assert demo_sysfs.read_attr(attr) == "vfio-pci"
    demo_sysfs.write_attr(attr, "\n")
    assert demo_sysfs.read_attr(attr) == "(null)"


def test_override_unbind_probe_moves_to_vfio_and_creates_group_node(demo_root: Path,
                                                                     demo_sysfs: Sysfs) -> None:
    bind_vfio(demo_sysfs, NIC0)
    assert driver_of(demo_root, NIC0) == "vfio-pci"
    assert (demo_root / "bus/pci/drivers/vfio-pci" / NIC0).is_symlink()
    assert not (demo_root / "bus/pci/devices" / NIC0 / "net").exists()
    assert not (demo_root / "class/net/enp4s0f0").exists()
    assert (demo_root / "dev/vfio/5").exists()
    assert "DRIVER=vfio-pci" in (demo_root / "bus/pci/devices" / NIC0 / "uevent").read_text()


def test_back_to_native_driver_restores_netdev_and_removes_vfio_node(demo_root: Path,
                                                                      demo_sysfs: Sysfs) -> None:
    bind_vfio(demo_sysfs, NIC0)
    demo_sysfs.write_attr(f"bus/pci/devices/{NIC0}/driver_override", "\n")
    demo_sysfs.write_attr("bus/pci/drivers/vfio-pci/unbind", NIC0)
    assert not (demo_root / "dev/vfio/5").exists()
    demo_sysfs.write_attr("bus/pci/drivers_probe", NIC0)
    assert driver_of(demo_root, NIC0) == "e1000e"
    assert os.listdir(demo_root / "bus/pci/devices" / NIC0 / "net") == ["enp4s0f0"]


def test_override_for_unloaded_driver_leaves_function_unbound(demo_root: Path,
                                                              demo_sysfs: Sysfs) -> None:
    demo_sysfs.write_attr(f"bus/pci/devices/{NIC0}/driver_override", "no_such_driver")
    demo_sysfs.write_attr("bus/pci/drivers/e1000e/unbind", NIC0)
    demo_sysfs.write_attr("bus/pci/drivers_probe", NIC0)  # no error: probe failures are silent
    assert driver_of(demo_root, NIC0) is None


@pytest.mark.parametrize("rel,value,code", [
    ("bus/pci/drivers/igb/unbind", NIC0, errno.ENODEV),          # not bound to igb
    ("bus/pci/drivers/e1000e/unbind", "0000:09:00.0", errno.ENODEV),
    ("bus/pci/drivers/e1000e/bind", NIC0, errno.EBUSY),          # already bound
    ("bus/pci/drivers/vfio-pci/bind", NIC0, errno.ENODEV),       # no override, no id
    ("bus/pci/drivers_probe", "0000:09:00.0", errno.ENODEV),
    (f"bus/pci/devices/{NIC0}/vendor", "0x1234", errno.EACCES),  # read-only attribute
    (f"bus/pci/devices/{PF}/sriov_numvfs", "8", errno.ERANGE),   # igb allows 7
    (f"bus/pci/devices/{PF}/sriov_numvfs", "two", errno.EINVAL),
    (f"bus/pci/devices/{PF}/sriov_drivers_autoprobe", "maybe", errno.EINVAL),
    ("bus/pci/drivers/vfio-pci/new_id", "8086", errno.EINVAL),
    ("bus/pci/drivers/vfio-pci/remove_id", "8086 105e", errno.ENODEV),
    (f"bus/pci/devices/{NIC0}/driver_override", "x" * 4096, errno.EINVAL),
])
def test_kernel_refusals(demo_sysfs: Sysfs, demo_root: Path, rel: str, value: str,
                         code: int) -> None:
    before = {a: driver_of(demo_root, a) for a in (NIC0, NIC1, PF)}
    assert errno_of(demo_sysfs, rel, value) == code
    assert {a: driver_of(demo_root, a) for a in (NIC0, NIC1, PF)} == before


def test_unbind_then_bind_to_native(demo_root: Path, demo_sysfs: Sysfs) -> None:
    demo_sysfs.write_attr("bus/pci/drivers/e1000e/unbind", NIC1)
    assert driver_of(demo_root, NIC1) is None
    assert not (demo_root / "bus/pci/devices" / NIC1 / "net").exists()
    demo_sysfs.write_attr("bus/pci/drivers/e1000e/bind", NIC1)
    assert driver_of(demo_root, NIC1) == "e1000e"


def test_new_id_grabs_every_unbound_function_with_that_id(demo_root: Path,
                                                          demo_sysfs: Sysfs) -> None:
    for a in (NIC0, NIC1):
        demo_sysfs.write_attr("bus/pci/drivers/e1000e/unbind", a)
    demo_sysfs.write_attr("bus/pci/drivers/vfio-pci/new_id", "8086 105e")
    assert driver_of(demo_root, NIC0) == driver_of(demo_root, NIC1) == "vfio-pci"
    assert errno_of(demo_sysfs, "bus/pci/drivers/vfio-pci/new_id", "8086 105e") == errno.EEXIST
    demo_sysfs.write_attr("bus/pci/drivers/vfio-pci/remove_id", "8086 105e")
    # remove_id does not unbind; after an unbind the native driver wins the probe again
    assert driver_of(demo_root, NIC0) == "vfio-pci"
    demo_sysfs.write_attr("bus/pci/drivers/vfio-pci/unbind", NIC0)
    demo_sysfs.write_attr("bus/pci/drivers_probe", NIC0)
    assert driver_of(demo_root, NIC0) == "e1000e"


def test_native_driver_wins_probe_over_new_id(demo_root: Path, demo_sysfs: Sysfs) -> None:
    demo_sysfs.write_attr("bus/pci/drivers/vfio-pci/new_id", "8086 105e")  # both bound: no-op
    demo_sysfs.write_attr("bus/pci/drivers/e1000e/unbind", NIC0)
    demo_sysfs.write_attr("bus/pci/drivers_probe", NIC0)
    assert driver_of(demo_root, NIC0) == "e1000e"


def vfs_of(root: Path, pf: str) -> list[str]:
    pf_dir = root / "bus/pci/devices" / pf
    links = sorted((n for n in os.listdir(pf_dir) if n.startswith("virtfn")),
                   key=lambda n: int(n[6:]))
    return [os.path.basename(os.readlink(pf_dir / n)) for n in links]


def test_sriov_enable_creates_vfs_at_offset_and_stride(demo_root: Path, demo_sysfs: Sysfs) -> None:
    assert demo_sysfs.read_attr(f"bus/pci/devices/{PF}/sriov_totalvfs") == "7"
    demo_sysfs.write_attr(f"bus/pci/devices/{PF}/sriov_numvfs", "2")
    assert vfs_of(demo_root, PF) == ["0000:05:10.0", "0000:05:10.2"]
    groups = set()
    for vf in ("0000:05:10.0", "0000:05:10.2"):
        d = demo_root / "bus/pci/devices" / vf
        assert os.path.basename(os.readlink(d / "physfn")) == PF
        assert (d / "device").read_text() == "0x10ca\n"
        assert driver_of(demo_root, vf) == "igbvf"
        groups.add(os.path.basename(os.readlink(d / "iommu_group")))
        assert d.resolve().parent == (demo_root / "bus/pci/devices" / PF).resolve().parent
    assert len(groups) == 2  # each VF in a group of its own
    assert demo_sysfs.read_attr(f"bus/pci/devices/{PF}/sriov_numvfs") == "2"
    assert sorted(os.listdir(demo_root / "bus/pci/devices/0000:05:10.2/net")) == ["enp5s0f0v1"]


def test_sriov_count_changes_only_through_zero(demo_root: Path, demo_sysfs: Sysfs) -> None:
    numvfs = f"bus/pci/devices/{PF}/sriov_numvfs"
    demo_sysfs.write_attr(numvfs, "2")
    assert errno_of(demo_sysfs, numvfs, "3") == errno.EBUSY
    demo_sysfs.write_attr(numvfs, "2")  # same count: accepted, nothing happens
    demo_sysfs.write_attr(numvfs, "0")
    assert vfs_of(demo_root, PF) == []
    assert not (demo_root / "bus/pci/devices/0000:05:10.0").exists()
    demo_sysfs.write_attr(numvfs, "3")
    assert len(vfs_of(demo_root, PF)) == 3


def test_autoprobe_off_vfs_bind_only_by_override(demo_root: Path, demo_sysfs: Sysfs) -> None:
    demo_sysfs.write_attr(f"bus/pci/devices/{PF}/sriov_drivers_autoprobe", "0")
    demo_sysfs.write_attr(f"bus/pci/devices/{PF}/sriov_numvfs", "2")
    vf = "0000:05:10.0"
    assert driver_of(demo_root, vf) is None
    demo_sysfs.write_attr("bus/pci/drivers_probe", vf)
    assert driver_of(demo_root, vf) is None
    assert errno_of(demo_sysfs, "bus/pci/drivers/igbvf/bind", vf) == errno.ENODEV
    demo_sysfs.write_attr(f"bus/pci/devices/{vf}/driver_override", "vfio-pci")
    demo_sysfs.write_attr("bus/pci/drivers_probe", vf)
    assert driver_of(demo_root, vf) == "vfio-pci"
    group = os.path.basename(os.readlink(demo_root / "bus/pci/devices" / vf / "iommu_group"))
    assert (demo_root / "dev/vfio" / group).exists()


def test_unbinding_pf_driver_destroys_vfs(demo_root: Path, demo_sysfs: Sysfs) -> None:
    demo_sysfs.write_attr(f"bus/pci/devices/{PF}/sriov_numvfs", "2")
    bind_vfio(demo_sysfs, "0000:05:10.0")
    group = os.path.basename(os.readlink(demo_root / "bus/pci/devices/0000:05:10.0/iommu_group"))
    demo_sysfs.write_attr("bus/pci/drivers/igb/unbind", PF)
    assert vfs_of(demo_root, PF) == []
    assert not (demo_root / "bus/pci/devices/0000:05:10.0").exists()
    assert not (demo_root / "kernel/iommu_groups" / group).exists()
    assert not (demo_root / "dev/vfio" / group).exists()
    assert demo_sysfs.read_attr(f"bus/pci/devices/{PF}/sriov_numvfs") == "0"
    assert demo_sysfs.read_attr(f"bus/pci/devices/{PF}/sriov_totalvfs") == "8"  # hardware limit


def test_pf_on_vfio_cannot_enable_vfs(demo_root: Path, demo_sysfs: Sysfs) -> None:
    bind_vfio(demo_sysfs, PF)
    assert demo_sysfs.read_attr(f"bus/pci/devices/{PF}/sriov_totalvfs") == "8"
    assert errno_of(demo_sysfs, f"bus/pci/devices/{PF}/sriov_numvfs", "1") == errno.ENOENT
    assert errno_of(demo_sysfs, f"bus/pci/devices/{PF}/sriov_numvfs", "9") == errno.ERANGE


def test_unbound_pf_cannot_configure_sriov(demo_sysfs: Sysfs) -> None:
    demo_sysfs.write_attr("bus/pci/drivers/igb/unbind", PF)
    assert errno_of(demo_sysfs, f"bus/pci/devices/{PF}/sriov_numvfs", "1") == errno.ENOENT


def test_vfio_refuses_bridges(demo_root: Path, demo_sysfs: Sysfs) -> None:
    port = "0000:00:1c.0"
    demo_sysfs.write_attr(f"bus/pci/devices/{port}/driver_override", "vfio-pci")
    demo_sysfs.write_attr("bus/pci/drivers/pcieport/unbind", port)
    assert errno_of(demo_sysfs, "bus/pci/drivers/vfio-pci/bind", port) == errno.EINVAL
    assert driver_of(demo_root, port) is None


def test_vfio_needs_an_iommu_group(make_host) -> None:  # type: ignore[no-untyped-def]
    root = make_host("demo", iommu=False)
    sysfs = SimulatedMachine(str(root)).sysfs
    sysfs.write_attr(f"bus/pci/devices/{NIC0}/driver_override", "vfio-pci")
    sysfs.write_attr("bus/pci/drivers/e1000e/unbind", NIC0)
    assert errno_of(sysfs, "bus/pci/drivers/vfio-pci/bind", NIC0) == errno.EINVAL
    assert not os.listdir(root / "kernel/iommu_groups")


def test_group_node_stays_while_any_member_is_on_vfio(demo_root: Path, demo_sysfs: Sysfs) -> None:
    bind_vfio(demo_sysfs, NIC0)
    bind_vfio(demo_sysfs, NIC1)
    demo_sysfs.write_attr("bus/pci/drivers/vfio-pci/unbind", NIC0)
    assert (demo_root / "dev/vfio/5").exists()
    demo_sysfs.write_attr("bus/pci/drivers/vfio-pci/unbind", NIC1)
    assert not (demo_root / "dev/vfio/5").exists()


def test_config_space_tracks_numvfs(demo_root: Path, demo_sysfs: Sysfs) -> None:
    demo_sysfs.write_attr(f"bus/pci/devices/{PF}/sriov_numvfs", "3")
    cfg = (demo_root / "bus/pci/devices" / PF / "config").read_bytes()
    assert int.from_bytes(cfg[0x110:0x112], "little") == 3
    assert cfg[0x108] & 1  # VF Enable


def test_group_numbers_reuse_the_lowest_free(demo_root: Path, demo_sysfs: Sysfs) -> None:
    numvfs = f"bus/pci/devices/{PF}/sriov_numvfs"
    demo_sysfs.write_attr(numvfs, "1")
    first = os.readlink(demo_root / "bus/pci/devices/0000:05:10.0/iommu_group")
    demo_sysfs.write_attr(numvfs, "0")
    demo_sysfs.write_attr(numvfs, "1")
    assert os.readlink(demo_root / "bus/pci/devices/0000:05:10.0/iommu_group") == first


def test_empty_write_changes_nothing(demo_root: Path, demo_sysfs: Sysfs) -> None:
    # Linux: sysfs_kf_write() returns before store() for zero bytes (seen in the lab)
    attr = f"bus/pci/devices/{NIC0}/driver_override"
    demo_sysfs.write_attr(attr, "vfio-pci")
    demo_sysfs.write_attr(attr, "")
    assert demo_sysfs.read_attr(attr) == "vfio-pci"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"dynids": 3}', '{"evil": {}}'])
def test_a_damaged_kernel_state_is_one_line_before_any_write(run, demo_root, content) -> None:  # type: ignore[no-untyped-def]
    from pcimgr.sim.kernel import STATE
    (demo_root / STATE).write_text(content)
    links = {a: os.readlink(demo_root / "bus/pci/devices" / a / "driver")
             for a in ("0000:04:00.0", "0000:04:00.1")}
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 2, r.output
    assert "kernel state" in r.output and "pcimgr sim create" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert {a: os.readlink(demo_root / "bus/pci/devices" / a / "driver")
            for a in links} == links
