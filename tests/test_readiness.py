"""Ready for a guest is more than vfio-pci: VFIO variant drivers (chosen as libvirt chooses,
from the kernel's modules.alias), vendor drivers that register with VFIO themselves, the
group rule and detach built on that one fact. On the `modern` simulated profile (Linux
6.12 with IOMMUFD)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcimgr.core import hostdev_xml, variants
from pcimgr.core.address import PciAddress
from pcimgr.core.readiness import readiness
from pcimgr.core.viability import viability
from pcimgr.drivers import planner as drivers
from pcimgr.host import discovery, modaliases, usage
from pcimgr.sim import builder, profiles
from pcimgr.sim.machine import SimulatedMachine
from tests.conftest import driver_of

MLX_ON_VARIANT, MLX_ON_HOST = "0000:41:00.2", "0000:41:00.3"
VGPU_VF, GPU_PF = "0000:81:00.4", "0000:81:00.0"
VIRTIO_VF, IGB_VF = "0000:c1:00.1", "0000:02:10.0"


@pytest.fixture
def modern(tmp_path: Path) -> Path:
    root = tmp_path / "modern"
    builder.build(str(root), profiles.get("modern"))
    return root


def device(root: Path, address: str):  # type: ignore[no-untyped-def]
    d = discovery.read_device(SimulatedMachine(str(root)).sysfs, PciAddress.parse(address))
    assert d is not None
    return d


def test_the_most_specific_alias_wins_as_in_libvirt(modern: Path) -> None:
    aliases = modaliases.vfio_aliases(SimulatedMachine(str(modern)))
    assert ("v000015B3d0000101Esv*sd*bc*sc*i*", "mlx5_vfio_pci") in aliases
    assert all(not a.module.startswith("mlx5_core") for a in aliases)  # pci: lines ignored
    mlx = device(modern, MLX_ON_HOST)
    assert variants.modalias(mlx).startswith("v000015B3d0000101Esv000015B3sd")
    assert variants.best(mlx, aliases) == "mlx5_vfio_pci"  # not the vfio_pci catch-all
    assert variants.best(device(modern, IGB_VF), aliases) == "vfio_pci"
    two = [("v*d*sv*sd*bc*sc*i*", "wide"), ("v000015B3d*sv*sd*bc*sc*i*", "first"),
           ("v000015B3d*sv*sd*bc*sc*i*", "second")]
    assert variants.best(mlx, two) == "first"  # fewest wildcards, then modules.alias order
    assert variants.best(mlx, []) is None


def test_modules_alias_is_read_for_its_vfio_lines_only() -> None:
    data = (b"alias pci:v*d*sv*sd*bc*sc*i* other\nalias vfio_pci:v1 good_vfio_pci\n"
            b"alias vfio_pci:v2 bad;module\nalias vfio_pci:v3\nalias vfio_pci:v4 two words x\n"
            b"alias vfio_pci:v5 last_vfio_pci")
    assert modaliases._parsed(data) == (("v1", "good_vfio_pci"), ("v5", "last_vfio_pci"))
    assert modaliases._parsed(b"x" * (modaliases.MAX_SIZE + 1)) == ()


def test_each_function_says_how_a_guest_takes_it(modern: Path) -> None:
    assert readiness(device(modern, MLX_ON_VARIANT)) == ("variant", "mlx5_vfio_pci")
    assert readiness(device(modern, VGPU_VF)) == ("vendor", "nvidia")
    assert device(modern, VGPU_VF).vfio_dev == "vfio1"
    for not_ready in (GPU_PF, MLX_ON_HOST, VIRTIO_VF, IGB_VF):
        assert readiness(device(modern, not_ready)).kind == "", not_ready
    host = discovery.scan(SimulatedMachine(str(modern)).sysfs)
    for address in (MLX_ON_VARIANT, VGPU_VF):  # the group rule: any VFIO provider
        assert viability(host.groups[host.require(PciAddress.parse(address)).iommu_group]
                         ).viable, address


def test_list_and_show_say_it(run, modern: Path) -> None:  # type: ignore[no-untyped-def]
    r = run("--sysfs-root", modern, "list", "--all", "--json")
    by = {d["address"]: d["vfio"] for d in json.loads(r.output)}
    assert by[MLX_ON_VARIANT] == {"ready": True, "kind": "variant", "driver": "mlx5_vfio_pci",
                                  "device": "vfio0"}
    assert by[VGPU_VF] == {"ready": True, "kind": "vendor", "driver": "nvidia",
                           "device": "vfio1"}
    assert by[VIRTIO_VF] == {"ready": False, "kind": None, "driver": None, "device": None}
    shown = json.loads(run("--sysfs-root", modern, "show", VIRTIO_VF, "--json").output)
    assert shown["detach_binds"] == "virtio_vfio_pci" and shown["vfio_nodes"] == {
        "group": None, "cdev": None}
    assert "<driver model=\"virtio_vfio_pci\" />" in shown["hostdev_xml"]
    shown = json.loads(run("--sysfs-root", modern, "show", MLX_ON_VARIANT, "--json").output)
    group = shown["iommu_group"]
    assert shown["detach_binds"] is None and shown["vfio_nodes"] == {
        "group": ["/dev/vfio/vfio", f"/dev/vfio/{group}"],
        "cdev": ["/dev/iommu", "/dev/vfio/devices/vfio0"]}
    text = run("--sysfs-root", modern, "show", VGPU_VF).output
    assert "ready for a guest: on nvidia, which registers it with VFIO itself" in text
    assert 'managed="no"' in text


def test_detach_binds_the_best_variant_and_leaves_ready_ones(run, modern: Path) -> None:  # type: ignore[no-untyped-def]
    r = run("--sysfs-root", modern, "detach", MLX_ON_HOST, VIRTIO_VF, IGB_VF)
    assert r.exit_code == 0, r.output
    assert [driver_of(modern, a) for a in (MLX_ON_HOST, VIRTIO_VF, IGB_VF)] == [
        "mlx5_vfio_pci", "virtio_vfio_pci", "vfio-pci"]
    assert (modern / "dev/vfio/devices").is_dir()
    before = sorted(os.listdir(modern / "class/vfio-dev"))
    r = run("--sysfs-root", modern, "detach", MLX_ON_VARIANT, VGPU_VF)
    assert r.exit_code == 0 and "Nothing to do." in r.output
    assert "0000:81:00.4 is ready for a guest already: on nvidia" in r.output
    assert sorted(os.listdir(modern / "class/vfio-dev")) == before  # nothing rebound
    r = run("--sysfs-root", modern, "detach", MLX_ON_VARIANT, "--driver", "vfio-pci")
    assert r.exit_code == 0 and driver_of(modern, MLX_ON_VARIANT) == "vfio-pci"
    r = run("--sysfs-root", modern, "rebind", MLX_ON_HOST, VIRTIO_VF, IGB_VF)
    assert r.exit_code == 0, r.output
    assert [driver_of(modern, a) for a in (MLX_ON_HOST, VIRTIO_VF, IGB_VF)] == [
        "mlx5_core", "virtio-pci", "igbvf"]
    assert not (modern / "dev/vfio/devices" / "vfio3").exists()


def test_define_a_variant_and_status(run, modern: Path) -> None:  # type: ignore[no-untyped-def]
    r = run("--sysfs-root", modern, "define", MLX_ON_HOST, "--driver", "mlx5_vfio_pci")
    assert r.exit_code == 0, r.output
    assert run("--sysfs-root", modern, "apply").exit_code == 0
    assert driver_of(modern, MLX_ON_HOST) == "mlx5_vfio_pci"
    r = run("--sysfs-root", modern, "status", "--json")
    assert r.exit_code == 0 and json.loads(r.output)[0]["drift"] == []


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_no_plan_rebinds_a_ready_function_or_skips_a_variant(tmp_path_factory, data) -> None:  # type: ignore[no-untyped-def]
    """Property: over any set of the modern host's endpoints, detach without --driver
    leaves every ready function alone and binds every other one to the alias libvirt would
    choose; vfio-pci only where no more specific alias matches."""
    root = tmp_path_factory.mktemp("p") / "m"
    builder.build(str(root), profiles.get("modern"))
    machine = SimulatedMachine(str(root))
    host = discovery.scan(machine.sysfs)
    from pcimgr.drivers.safety import chipset
    never = {m.address for g in host.groups.values() if any(chipset(x) for x in g.members)
             for m in g.members}  # refused whatever the driver (test_hostdriver)
    endpoints = [d for d in host.devices if not d.is_bridge and d.driver is not None
                 and d.base_class != 0x06 and d.address not in never]
    chosen = data.draw(st.lists(st.sampled_from(endpoints), min_size=1, max_size=4,
                                unique_by=lambda d: d.address))
    aliases = modaliases.vfio_aliases(machine)
    p = drivers.plan_detach(machine, host, usage.survey(machine),
                            tuple(d.address for d in chosen), None, True, True)
    moved = {s.address: s.target for s in p.plan.steps}  # type: ignore[attr-defined]
    for d in chosen:
        if readiness(d).kind:
            assert str(d.address) not in moved
        elif str(d.address) in moved:
            best = variants.best(d, aliases)
            want = "vfio-pci" if best in (None, "vfio_pci") else best
            assert moved[str(d.address)] == want


def test_the_xml_names_the_variant() -> None:
    a = PciAddress.parse(MLX_ON_VARIANT)
    assert hostdev_xml.to_string(hostdev_xml.hostdev(a, True, "mlx5_vfio_pci")).splitlines()[
        1] == '  <driver model="mlx5_vfio_pci" />'
    text = hostdev_xml.to_string(hostdev_xml.interface(a, False, "52:54:00:00:00:01", 10,
                                                       "mlx5_vfio_pci"))
    assert '<driver model="mlx5_vfio_pci" />' in text and 'managed="no"' in text


def test_vfio_dev_on_a_6_1_host_has_no_cdev(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    """Linux 6.1 (Debian 12, the demo profile) registers vfio-dev/vfioN for every VFIO
    device but has no device cdev: no `dev` file, no /dev/vfio/devices."""
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0
    names = sorted(os.listdir(demo_root / "bus/pci/devices/0000:04:00.0/vfio-dev"))
    assert len(names) == 1 and names[0].startswith("vfio")
    assert not (demo_root / "bus/pci/devices/0000:04:00.0/vfio-dev" / names[0] / "dev").exists()
    assert not (demo_root / "dev/vfio/devices").exists()
    shown = json.loads(run("--sysfs-root", demo_root, "show", "04:00.0", "--json").output)
    assert shown["vfio_nodes"]["cdev"] is None and shown["vfio_nodes"]["group"]
    assert run("--sysfs-root", demo_root, "rebind", "04:00.0", "04:00.1").exit_code == 0
    assert not (demo_root / "bus/pci/devices/0000:04:00.0/vfio-dev").exists()
    assert os.listdir(demo_root / "class/vfio-dev") == []


def test_doctor_names_the_iommu_backends(run, modern: Path, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    from pcimgr.advice import doctor
    checks = {c["name"]: c for c in json.loads(
        run("--sysfs-root", modern, "doctor", "--json").output)["checks"]}
    assert "IOMMUFD device cdev (/dev/iommu + /dev/vfio/devices/vfioN)" in checks[
        "iommu-backend"]["detail"]
    checks = {c["name"]: c for c in json.loads(
        run("--sysfs-root", demo_root, "doctor", "--json").output)["checks"]}
    assert "IOMMUFD" not in checks["iommu-backend"]["detail"]  # Debian 12's 6.1
    machine = SimulatedMachine(str(modern))
    assert "libvirt 12.1.0 can give a hostdev through IOMMUFD" in doctor._backend(
        machine, "12.1.0").detail
    assert "libvirt 9.0.0 uses the group interface only" in doctor._backend(
        machine, "9.0.0").detail
    # no VFIO device bound yet: the kernel's config says whether the cdev exists
    for vf in (MLX_ON_VARIANT, VGPU_VF, "0000:81:00.5"):
        run("--sysfs-root", modern, "unbind", vf, "--force")
    assert os.listdir(modern / "dev/vfio/devices") == []
    os.rmdir(modern / "dev/vfio/devices")
    assert "IOMMUFD" not in doctor._backend(machine, None).detail
    release = (modern / "proc/sys/kernel/osrelease").read_text().strip()
    (modern / "boot").mkdir(exist_ok=True)
    (modern / f"boot/config-{release}").write_text("CONFIG_IOMMUFD=y\nCONFIG_VFIO_DEVICE_CDEV=y\n")
    assert "IOMMUFD device cdev" in doctor._backend(machine, None).detail


def test_alias_fields_match_exactly_or_by_a_whole_star(modern: Path) -> None:
    """libvirt compares field by field: `*` or the exact value; `0a*` is no wildcard."""
    mlx = device(modern, MLX_ON_HOST)
    assert variants.fields(variants.modalias(mlx)) == (
        "000015B3", "0000101E", "000015B3", "00000016", "02", "00", "00")
    exact_class = [("v000015B3d0000101Esv*sd*bc02sc00i00", "exact"),
                   ("v000015B3d0000101Esv*sd*bc*sc*i*", "wider")]
    assert variants.best(mlx, exact_class) == "exact"
    assert variants.best(mlx, [("v000015B3d0000101Esv*sd*bc*sc*i00*", "pinned")]) is None
    assert variants.best(mlx, [("v000015b3d0000101Esv*sd*bc*sc*i*", "lower")]) is None
    assert variants.best(mlx, [("garbage", "x"), ("v*d*", "short")]) is None


def test_tree_says_it_too(run, modern: Path) -> None:  # type: ignore[no-untyped-def]
    text = run("--sysfs-root", modern, "tree").output
    assert "[nvidia (vendor: ready for a guest); group" in text
    assert "[mlx5_vfio_pci (variant: ready for a guest); group" in text

    def find(nodes, address):  # type: ignore[no-untyped-def]
        for n in nodes:
            if n["address"] == address:
                return n
            found = find(n["children"], address)
            if found:
                return found
        return None
    nodes = json.loads(run("--sysfs-root", modern, "tree", "--json").output)
    assert find(nodes, VGPU_VF)["vfio"]["kind"] == "vendor"


def test_assign_with_libvirt_before_10_never_leaves_a_variant_unmanaged(  # type: ignore[no-untyped-def]
        run, modern: Path, libvirt_uri, make_domain) -> None:
    """The lab showed Debian 12's libvirt 9.0 refusing to start a guest whose unmanaged
    device is on a VFIO variant ("must be manually detached"): before 10.0 pcimgr binds
    vfio-pci for an unmanaged assignment, and refuses one already on a variant."""
    from tests.test_assign import hostdevs
    vm = make_domain("variant")
    version = subprocess.run(["virsh", "-c", libvirt_uri, "version"], capture_output=True,
                             text=True).stdout
    if "libvirt 9." not in version and "library: libvirt 9." not in version:
        pytest.skip(f"this libvirt is not 9.x: {version.strip()}")
    r = run("--sysfs-root", modern, "--connect", libvirt_uri, "assign", "41:00.2", vm)
    assert r.exit_code == 4, r.output
    assert "0000:41:00.2 is on the VFIO variant mlx5_vfio_pci" in r.output
    assert "detach 0000:41:00.2 --driver vfio-pci` first" in r.output
    assert hostdevs(vm) == []
    r = run("--sysfs-root", modern, "--connect", libvirt_uri, "assign", "c1:00.1", vm)
    assert r.exit_code == 0, r.output
    assert "binding vfio-pci, not its VFIO variant virtio_vfio_pci" in r.output
    assert (modern / "bus/pci/devices/0000:c1:00.1/driver").resolve().name == "vfio-pci"
    assert [h["managed"] for h in hostdevs(vm)] == ["no"]
