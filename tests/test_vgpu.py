"""NVIDIA's vendor vGPU interface on SR-IOV VFs, on the simulated 'modern' host (an L4 with
two VFs on nvidia): vgpu list/set, the siblings' catalogs, refusals, rollback and the
journal; assign with a real libvirtd."""

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from pcimgr.sim.machine import SimulatedMachine
from tests import libvirtd
from tests.strace_faults import needs_strace, pcimgr

VF0, VF1 = "0000:81:00.4", "0000:81:00.5"
L4_TYPES = list(range(1044, 1052))


@pytest.fixture
def root(make_host: Callable[..., Path]) -> Path:
    return make_host("modern")


def current(root: Path, vf: str) -> str:
    return (root / "bus/pci/devices" / vf / "nvidia/current_vgpu_type").read_text().strip()


def listed(run, root: Path) -> dict[str, dict]:
    r = run("--sysfs-root", root, "vgpu", "list", "--json")
    assert r.exit_code == 0, r.output
    return {v["vf"]: v for v in json.loads(r.output)}


def test_list_shows_each_vf_and_what_it_can_take(run, root: Path) -> None:
    found = listed(run, root)
    assert set(found) == {VF0, VF1}
    assert [t["id"] for t in found[VF0]["creatable"]] == L4_TYPES
    assert found[VF0]["current_vgpu_type"] is None and found[VF0]["guests"] is None
    types = run("--sysfs-root", root, "mdev", "types", VF0)
    assert types.exit_code == 0 and "1049  NVIDIA L4-8Q" in types.output


def test_set_writes_the_type_and_the_sibling_lists_shrink(run, root: Path) -> None:
    r = run("--sysfs-root", root, "vgpu", "set", VF0, "L4-8Q")
    assert r.exit_code == 0, r.output
    assert current(root, VF0) == "1049"
    # homogeneous by framebuffer size, 16 GB left: the other VF takes only 8 GB types
    assert f"{VF1}  -            ?        1049 L4-8Q" in r.output
    assert [t["id"] for t in listed(run, root)[VF1]["creatable"]] == [1049]
    refused = run("--sysfs-root", root, "vgpu", "set", VF1, "1044")
    assert refused.exit_code == 2 and "it can take: 1049 (NVIDIA L4-8Q)" in refused.output
    assert current(root, VF1) == "0"
    changed = run("--sysfs-root", root, "vgpu", "set", VF0, "L4-4Q")
    assert changed.exit_code == 4 and f"`pcimgr vgpu set {VF0} none`" in changed.output
    assert run("--sysfs-root", root, "vgpu", "set", VF0, "none").exit_code == 0
    assert current(root, VF0) == "0"
    assert [t["id"] for t in listed(run, root)[VF1]["creatable"]] == L4_TYPES


def test_clearing_a_vf_a_process_holds_is_refused(run, root: Path) -> None:
    assert run("--sysfs-root", root, "vgpu", "set", VF0, "1051").exit_code == 0
    group = int((root / "bus/pci/devices" / VF0 / "iommu_group").resolve().name)
    SimulatedMachine(str(root)).kernel.hold_vfio(group, "qemu-system-x86[77]")
    r = run("--sysfs-root", root, "vgpu", "set", VF0, "none")
    assert r.exit_code == 4 and "for qemu-system-x86[77]" in r.output
    assert current(root, VF0) == "1051"


def test_a_function_without_the_interface_is_not_found(run, root: Path) -> None:
    r = run("--sysfs-root", root, "vgpu", "set", "0000:41:00.2", "1044")
    assert r.exit_code == 3 and "has no vendor vGPU interface" in r.output


def test_a_kernel_refusal_rolls_back(run, root: Path, mocker) -> None:
    from pcimgr.host.sysfs import Sysfs
    real = Sysfs.write_attr

    def refuse(self, rel, value):
        if rel.endswith("current_vgpu_type"):
            raise OSError(16, "Device or resource busy")
        return real(self, rel, value)
    mocker.patch.object(Sysfs, "write_attr", refuse)
    r = run("--sysfs-root", root, "vgpu", "set", VF0, "1044")
    assert r.exit_code == 7 and "Device or resource busy" in r.output
    assert current(root, VF0) == "0"


@needs_strace
def test_sigkill_after_the_write_then_recover_puts_it_back(root: Path) -> None:
    killed = pcimgr(root, "vgpu", "set", VF0, "1044", inject="write:signal=SIGKILL:when=2+")
    assert killed.returncode == -signal.SIGKILL
    after = pcimgr(root, "recover")
    assert after.returncode == 0, after.stderr
    assert current(root, VF0) == "0"


def test_a_vf_without_a_type_is_not_assigned(run, root: Path, libvirt_uri,
                                            make_domain) -> None:
    vm = make_domain("vgpu")
    r = run("--sysfs-root", root, "--connect", libvirt_uri, "assign", VF0, vm)
    assert r.exit_code == 4 and f"`pcimgr vgpu set {VF0} TYPE` first" in r.output
    assert run("--sysfs-root", root, "vgpu", "set", VF0, "1047").exit_code == 0
    r = run("--sysfs-root", root, "--connect", libvirt_uri, "assign", VF0, vm)
    assert r.exit_code == 0, r.output
    dumped = libvirtd.virsh("dumpxml", "--inactive", vm).stdout
    assert "<hostdev mode='subsystem' type='pci' managed='no'>" in dumped
    driver = (root / "bus/pci/devices" / VF0 / "driver").resolve().name
    assert driver == "nvidia"  # never rebound
    guests = json.loads(run("--sysfs-root", root, "--connect", libvirt_uri, "vgpu", "list",
                            "--json").output)
    assert {v["vf"]: v["guests"] for v in guests}[VF0] == [vm]
    refused = run("--sysfs-root", root, "--connect", libvirt_uri, "vgpu", "set", VF0, "none")
    assert refused.exit_code == 4 and f"for {vm} (its XML)" in refused.output
    assert current(root, VF0) == "1047"


def test_a_defined_vgpu_type_is_applied_and_drift_shown(run, root: Path) -> None:
    wrong = run("--sysfs-root", root, "define", "81:00.0", "--vfs", "2", "--vf", "0",
                "--vgpu-type", "1049")
    assert wrong.exit_code == 2 and "add --vf-driver host" in wrong.output
    bad = run("--sysfs-root", root, "define", "81:00.0", "--vfs", "2", "--vf-driver", "host",
              "--vf", "0", "--vgpu-type", "9999")
    assert bad.exit_code == 2 and "cannot take vGPU type 9999" in bad.output
    r = run("--sysfs-root", root, "define", "81:00.0", "--vfs", "2", "--vf-driver", "host",
            "--vf", "0", "--vgpu-type", "1049")
    assert r.exit_code == 0, r.output
    assert run("--sysfs-root", root, "define", "81:00.0", "--vf", "1", "--vgpu-type",
               "1049").exit_code == 0
    status = json.loads(run("--sysfs-root", root, "status", "--json").stdout)
    assert status[0]["drift"] == ["VF 0 vGPU type is none, defined 1049",
                                  "VF 1 vGPU type is none, defined 1049"]
    applied = run("--sysfs-root", root, "apply")
    assert applied.exit_code == 0, applied.output
    # the VFs stay on nvidia: no reprobe (it would drop a vGPU type), then the types
    assert "nvidia ->" not in applied.output
    assert (current(root, VF0), current(root, VF1)) == ("1049", "1049")
    assert json.loads(run("--sysfs-root", root, "status", "--json").stdout)[0]["ok"] is True
    again = run("--sysfs-root", root, "apply")
    assert again.exit_code == 0 and "matches the definitions" in again.output


def test_vfs_create_host_leaves_vendor_vfs_and_their_types_alone(run, root: Path) -> None:
    assert run("--sysfs-root", root, "vgpu", "set", VF0, "1047").exit_code == 0
    r = run("--sysfs-root", root, "vfs", "create", "81:00.0", "2", "--driver", "host")
    assert r.exit_code == 0 and "already has 2 VF(s)" in r.output, r.output
    assert current(root, VF0) == "1047"


def test_different_vgpu_types_on_one_gpu_are_refused_at_define(run, root: Path) -> None:
    assert run("--sysfs-root", root, "define", "81:00.0", "--vfs", "2", "--vf-driver", "host",
               "--vf", "0", "--vgpu-type", "1049").exit_code == 0
    r = run("--sysfs-root", root, "define", "81:00.0", "--vf", "1", "--vgpu-type", "1047")
    assert r.exit_code == 2 and "different vGPU types (1047, 1049)" in r.output


def test_set_by_name_to_the_type_a_vf_has_is_nothing_to_do(run, root: Path) -> None:
    assert run("--sysfs-root", root, "vgpu", "set", VF0, "NVIDIA L4-2Q").exit_code == 0
    again = run("--sysfs-root", root, "vgpu", "set", VF0, "NVIDIA L4-2Q")
    assert again.exit_code == 0 and "has vGPU type 1045 already" in again.output
