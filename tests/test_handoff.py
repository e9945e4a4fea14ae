"""Per-guest hand-off on the simulated desktop (issue 26): profiles, the preflight's
refusals, the steps and their rollback, the installed hook run as libvirt runs it (sh, the
domain XML on stdin), and what recover and the boot's apply do with a hand-off left behind.
The lab proves the same on a real kernel with a real libvirtd (tests/lab/test_lab_handoff.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli.app import cli
from pcimgr.sim import builder, profiles
from pcimgr.sim.desktop import STATE, UnitSpec
from tests.conftest import driver_of

GPU, AUDIO, NIC, HOST_NIC = "0000:03:00.0", "0000:03:00.1", "0000:05:00.0", "0000:04:00.0"
XML = ("<domain type='kvm'><name>{vm}</name>"
       "<uuid>6f1e7a6e-2a4c-4d3e-9e8a-2b2f0b1c3d4e</uuid></domain>")
SINGLE_GPU = ("vm1", GPU, "--group", "--framebuffer", "--stop-display-manager")


def desktop(tmp_path: Path, name: str = "sys", **changes: object) -> Path:
    """The desktop profile, its DesktopSpec changed as asked."""
    base = profiles.desktop()
    assert base.desktop is not None
    root = tmp_path / name
    builder.build(str(root), replace(base, desktop=replace(base.desktop, **changes)))
    return root


def pcimgr(root: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--sysfs-root", str(root), *args], input=stdin)


def state(root: Path) -> dict:
    return json.loads((root / STATE).read_text())


def dm_active(root: Path) -> bool:
    return bool(state(root)["units"]["display-manager.service"]["active"])


def vtcon1(root: Path) -> str:
    """fbcon's console: "gone" while no framebuffer is registered (the kernel removes it)."""
    bind = root / "class/vtconsole/vtcon1/bind"
    return bind.read_text().strip() if bind.exists() else "gone"


def record(root: Path, vm: str = "vm1") -> Path:
    return root / ".pcimgr-state/handoffs" / f"{vm}.json"


def hook(root: Path, vm: str, op: str, sub: str, xml: str | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed hook as libvirt runs it: sh, four arguments, the XML on stdin."""
    return subprocess.run(["sh", str(root / "etc/libvirt/hooks/qemu.d/pcimgr"), vm, op, sub,
                           "-"], input=xml if xml is not None else XML.format(vm=vm),
                          capture_output=True, text=True, timeout=120,
                          env=env or os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])})


@pytest.fixture
def single_gpu(tmp_path: Path) -> Path:
    root = desktop(tmp_path)
    r = pcimgr(root, "handoff", "define", *SINGLE_GPU, "--hugepages", "512",
               "--isolate-cpus", "4-15")
    assert r.exit_code == 0, r.output
    r = pcimgr(root, "hook", "install", "--program", sys.executable.replace("python", "pcimgr"))
    assert r.exit_code == 0, r.output
    return root


def test_define_writes_the_profile_and_shows_what_prepare_takes(tmp_path: Path) -> None:
    root = desktop(tmp_path)
    r = pcimgr(root, "handoff", "define", *SINGLE_GPU, "--hugepages", "8,1G")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "1. stop display-manager.service (it holds 0000:03:00.0's nodes)" in lines
    assert "     echo 0 > /sys/class/vtconsole/vtcon1/bind" in lines
    assert "3. 0000:03:00.0: amdgpu -> vfio-pci" in lines
    assert "4. 0000:03:00.1: snd_hda_intel -> vfio-pci" in lines
    assert "5. reserve 8 hugepages of 1G (pool 0 -> 8)" in lines
    saved = json.loads((root / ".pcimgr-config/handoff/vm1.json").read_text())
    assert saved["addresses"] == [GPU] and saved["group"] and saved["framebuffer"]
    assert saved["display_manager"] == "display-manager.service"
    assert saved["hugepages"] == {"pages": 8, "size_kb": 1048576}
    assert driver_of(root, GPU) == "amdgpu" and dm_active(root)  # nothing taken yet
    listed = json.loads(pcimgr(root, "handoff", "list", "--json").output)
    assert [(p["vm"], p["held_since"]) for p in listed] == [("vm1", None)]


@pytest.mark.parametrize("args, words", [
    (("vm1", GPU), "shares IOMMU group 11 with 0000:03:00.1"),
    (("vm1", GPU, "--group"), "carries the host's console (framebuffer fb0 drives the "
                              "console, it is the boot display); define the hand-off with "
                              "--framebuffer"),
    (("vm1", GPU, "--group", "--framebuffer"), "/dev/dri/card0 of 0000:03:00.0 is open by "
                                               "Xorg[1312] (gdm.service)"),
    (("vm1", HOST_NIC), "interface enp4s0 has address 192.0.2.20/24"),
    (("vm1", GPU, "--group", "--framebuffer", "--stop-display-manager", "--unload-driver",
      "--isolate-cpus", "0-15"), "leaves the host no CPU"),
    (("vm1", GPU, "--group", "--framebuffer", "--stop-display-manager", "--hugepages",
      "100,1G"), "needs 100 more hugepages of 1G (102400 MiB) and the host has 24576 MiB"),
    (("vm1", GPU, "--group", "--framebuffer", "--stop-display-manager", "--hugepages",
      "4,16G"), "the kernel offers no hugepages of 16G (it offers 2M, 1G)"),
])
def test_the_preflight_refuses_with_the_fix(tmp_path: Path, args: tuple[str, ...],
                                            words: str) -> None:
    root = desktop(tmp_path)
    r = pcimgr(root, "handoff", "define", *args)
    assert r.exit_code == 4, r.output
    assert words in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (root / ".pcimgr-config/handoff").exists()


@pytest.mark.parametrize("boot_fb, words", [
    (("simple-framebuffer.0", "simpledrm"), "initcall_blacklist=sysfb_init"),
    (("efi-framebuffer.0", "efifb"), "define the hand-off with --framebuffer"),
    (("vesa-framebuffer.0", "vesafb"), "define the hand-off with --framebuffer"),
])
def test_a_firmware_framebuffer_on_the_bar_is_refused(tmp_path: Path, boot_fb: tuple[str, str],
                                                      words: str) -> None:
    """Without --framebuffer every firmware framebuffer; simpledrm's even with it (sysfb's
    BOOTFB stays on the BAR), naming the kernel parameter."""
    root = desktop(tmp_path, boot_fb=boot_fb)
    r = pcimgr(root, "handoff", "define", "vm1", NIC, GPU, "--group",
               "--stop-display-manager", *(["--framebuffer"] if "simpledrm" in boot_fb else []))
    assert r.exit_code == 4, r.output
    assert words in r.output


def test_efifb_is_unbound_with_the_gpu_and_bound_again(tmp_path: Path) -> None:
    root = desktop(tmp_path, boot_fb=("efi-framebuffer.0", "efifb"))
    assert pcimgr(root, "handoff", "define", *SINGLE_GPU).exit_code == 0
    link = root / "devices/platform/efi-framebuffer.0/driver"
    r = pcimgr(root, "handoff", "prepare", "vm1")
    assert r.exit_code == 0, r.output
    assert not link.is_symlink() and driver_of(root, GPU) == "vfio-pci"
    assert pcimgr(root, "handoff", "release", "vm1").exit_code == 0
    assert os.readlink(link).endswith("/efifb") and driver_of(root, GPU) == "amdgpu"


@pytest.mark.parametrize("changes, args, words", [
    ({"modules": {"amdgpu": True}}, ("--unload-driver",), "amdgpu is built into the kernel"),
    ({"module_holders": {"amdgpu": ("amdxcp",)}}, ("--unload-driver",),
     "the module amdgpu is in use by amdxcp"),
    ({"vtcons": (("(S) dummy device", True),)}, (), "no virtual console in "
                                                    "/sys/class/vtconsole is fbcon's"),
    ({"systemd": False}, (), "systemd is not this host's service manager"),
    ({"hugepages": {2048: 0}}, ("--hugepages", "2,1G"), "it offers 2M"),
])
def test_the_preflight_knows_the_desktop(tmp_path: Path, changes: dict, args: tuple[str, ...],
                                         words: str) -> None:
    root = desktop(tmp_path, **changes)
    if changes.get("vtcons"):  # fbcon runs, but has no vtcon entry of its own
        (root / "class/graphics/fbcon").mkdir(exist_ok=True)
    r = pcimgr(root, "handoff", "define", *SINGLE_GPU, *args)
    assert r.exit_code == 4, r.output
    assert words in r.output


def test_the_hook_takes_at_prepare_and_gives_back_at_release(single_gpu: Path) -> None:
    root = single_gpu
    r = hook(root, "vm1", "prepare", "begin")
    assert r.returncode == 0, r.stderr
    assert (driver_of(root, GPU), driver_of(root, AUDIO)) == ("vfio-pci", "vfio-pci")
    assert not dm_active(root) and vtcon1(root) == "gone"
    assert (root / "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages").read_text() == "512\n"
    assert state(root)["properties"]["user.slice"] == {"AllowedCPUs": "0-3"}
    held = json.loads(record(root).read_text())
    assert held["uuid"] == "6f1e7a6e-2a4c-4d3e-9e8a-2b2f0b1c3d4e"
    assert [s["kind"] for s in held["steps"]] == [
        "stop-unit", "unbind-console", "bind", "bind", "hugepages", "allowed-cpus",
        "allowed-cpus", "allowed-cpus"]
    # libvirt's other events, and a repeated prepare: nothing changes
    before = record(root).read_text()
    for op, sub in (("start", "begin"), ("started", "begin"), ("reconnect", "begin"),
                    ("prepare", "begin")):
        r = hook(root, "vm1", op, sub)
        assert r.returncode == 0, r.stderr
    assert record(root).read_text() == before
    r = hook(root, "vm1", "release", "end")
    assert r.returncode == 0, r.stderr
    assert (driver_of(root, GPU), driver_of(root, AUDIO)) == ("amdgpu", "snd_hda_intel")
    assert dm_active(root) and vtcon1(root) == "1"
    assert (root / "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages").read_text() == "0\n"
    assert state(root)["properties"]["user.slice"] == {"AllowedCPUs": ""}
    assert not record(root).exists()
    assert list((root / ".pcimgr-state/devices").iterdir()) == []
    r = hook(root, "vm1", "release", "end")  # libvirt may release twice: nothing to do
    assert r.returncode == 0 and "nothing to give back" in r.stdout


def test_the_hook_does_nothing_for_a_guest_without_a_profile(single_gpu: Path) -> None:
    """Not even start Python: the script execs pcimgr only for a guest with a profile (a
    pcimgr that is not there proves it)."""
    script = single_gpu / "etc/libvirt/hooks/qemu.d/pcimgr"
    text = script.read_text()
    script.write_text(text.replace(text.split("exec ", 1)[1].split(" ", 1)[0],
                                   "/nonexistent/pcimgr"))
    for vm in ("vm2", "../vm1", ".hidden"):
        r = hook(single_gpu, vm, "prepare", "begin", xml="")
        assert (r.returncode, r.stderr) == (0, "")
    assert hook(single_gpu, "vm1", "prepare", "begin").returncode != 0  # it does run for vm1


def test_the_hook_never_imports_libvirt(single_gpu: Path, tmp_path: Path) -> None:
    poisoned = tmp_path / "poison"
    poisoned.mkdir()
    (poisoned / "libvirt.py").write_text("raise SystemExit('pcimgr imported libvirt in a hook')\n")
    env = os.environ | {"PYTHONPATH": f"{poisoned}:{Path(__file__).parents[1]}"}
    for op, sub in (("prepare", "begin"), ("release", "end")):
        r = hook(single_gpu, "vm1", op, sub, env=env)
        assert r.returncode == 0, r.stderr
    assert driver_of(single_gpu, GPU) == "amdgpu"


def test_a_domain_xml_of_another_guest_is_refused(single_gpu: Path) -> None:
    r = hook(single_gpu, "vm1", "prepare", "begin", xml=XML.format(vm="vm2"))
    assert r.returncode == 2 and "is 'vm2''s, not 'vm1''s" in r.stderr
    r = hook(single_gpu, "vm1", "prepare", "begin",
             xml="<!DOCTYPE d [<!ENTITY a 'x'>]><domain><name>vm1</name></domain>")
    assert r.returncode == 2 and "declares entities" in r.stderr
    assert driver_of(single_gpu, GPU) == "amdgpu"


def test_a_display_manager_that_will_not_stop_leaves_the_host_as_it_was(tmp_path: Path) -> None:
    root = desktop(tmp_path, units={"display-manager.service": UnitSpec(
        "sddm.service", holds=("/dev/dri/card0",), refuses_stop=True)})
    assert pcimgr(root, "handoff", "define", *SINGLE_GPU).exit_code == 0
    r = pcimgr(root, "handoff", "prepare", "vm1")
    assert r.exit_code == 7
    assert "failed at step 1" in r.output and "Job for display-manager.service canceled" in \
        r.output and "rolled back: the host is as it was before" in r.output
    assert driver_of(root, GPU) == "amdgpu" and dm_active(root) and vtcon1(root) == "1"
    assert not record(root).exists()


def test_a_failing_bind_undoes_the_steps_before_it(tmp_path: Path, mocker) -> None:
    root = desktop(tmp_path)
    assert pcimgr(root, "handoff", "define", *SINGLE_GPU).exit_code == 0
    from pcimgr.host.sysfs import Sysfs
    real = Sysfs.write_attr

    def write(self: Sysfs, rel: str, value: str) -> None:
        if rel == "bus/pci/drivers/snd_hda_intel/unbind":
            raise OSError(16, "Device or resource busy")
        real(self, rel, value)
    mocker.patch.object(Sysfs, "write_attr", write)
    r = pcimgr(root, "handoff", "prepare", "vm1")
    assert r.exit_code == 7 and "failed at step 4 (0000:03:00.1)" in r.output
    mocker.stopall()
    assert (driver_of(root, GPU), driver_of(root, AUDIO)) == ("amdgpu", "snd_hda_intel")
    assert dm_active(root) and vtcon1(root) == "1" and not record(root).exists()


def test_a_hook_killed_mid_way_is_undone_by_recover(single_gpu: Path) -> None:
    from tests.killed import run_killed_after
    code = run_killed_after("drivers_probe", "--sysfs-root",
                            str(single_gpu), "handoff", "prepare", "vm1")
    assert code == 9
    assert not dm_active(single_gpu) and vtcon1(single_gpu) == "gone"  # half taken
    r = pcimgr(single_gpu, "recover")
    assert r.exit_code == 0, r.output
    assert "undid its 3 started step(s)" in r.output
    assert driver_of(single_gpu, GPU) == "amdgpu" and dm_active(single_gpu)
    assert vtcon1(single_gpu) == "1" and not record(single_gpu).exists()


def test_recover_gives_back_a_hand_off_whose_guest_is_gone(single_gpu: Path, mocker) -> None:
    assert pcimgr(single_gpu, "handoff", "prepare", "vm1").exit_code == 0
    r = pcimgr(single_gpu, "recover")  # just taken: the guest may still be starting
    assert r.exit_code == 0 and driver_of(single_gpu, GPU) == "vfio-pci"
    import time
    mocker.patch("pcimgr.cli.commands.handoff.time.time", return_value=time.time() + 600)
    r = pcimgr(single_gpu, "recover")
    assert r.exit_code == 0, r.output
    assert "vm1's hand-off (its guest is not running): gave back what vm1 took" in r.output
    assert driver_of(single_gpu, GPU) == "amdgpu" and dm_active(single_gpu)


def test_a_hand_off_of_an_earlier_boot_is_forgotten_at_boot(single_gpu: Path) -> None:
    assert pcimgr(single_gpu, "handoff", "prepare", "vm1").exit_code == 0
    # the host rebooted: a new boot id, and the boot put the GPU back on amdgpu
    (single_gpu / "proc/sys/kernel/random/boot_id").write_text(
        "0b7e2c1d-9f3a-4b5c-8d6e-7f8091a2b3c4\n")
    assert pcimgr(single_gpu, "rebind", GPU, AUDIO).exit_code == 0
    r = pcimgr(single_gpu, "apply")
    assert r.exit_code == 0, r.output
    assert "vm1's hand-off (recorded in an earlier boot)" in r.output
    assert not record(single_gpu).exists()


def test_a_record_that_moves_another_function_is_refused(single_gpu: Path) -> None:
    assert pcimgr(single_gpu, "handoff", "prepare", "vm1").exit_code == 0
    held = json.loads(record(single_gpu).read_text())
    held["steps"].append({"kind": "bind", "module": "pcimgr.drivers.binding",
                          "address": HOST_NIC, "target": "vfio-pci",
                          "target_override": "vfio-pci", "original_driver": "pci-stub",
                          "original_override": None})
    record(single_gpu).write_text(json.dumps(held))
    r = pcimgr(single_gpu, "handoff", "release", "vm1")
    assert r.exit_code == 4 and f"its record moves {HOST_NIC}, which its profile does not " \
                                "allow" in r.output
    assert driver_of(single_gpu, HOST_NIC) == "igc"


def test_a_damaged_profile_is_named(single_gpu: Path) -> None:
    path = single_gpu / ".pcimgr-config/handoff/vm1.json"
    data = json.loads(path.read_text())
    (path.parent / "vm2.json").write_text(json.dumps(data))
    r = hook(single_gpu, "vm2", "prepare", "begin")
    assert r.returncode == 11 and "it is the profile of 'vm1', not of 'vm2'" in r.stderr
    path.write_text(json.dumps(data | {"display_manager": "x; rm -rf /"}))
    r = hook(single_gpu, "vm1", "prepare", "begin")
    assert r.returncode == 11 and "not a service unit" in r.stderr
    assert driver_of(single_gpu, GPU) == "amdgpu"


def test_undefine_waits_for_the_guest_to_give_back(single_gpu: Path) -> None:
    assert pcimgr(single_gpu, "handoff", "prepare", "vm1").exit_code == 0
    r = pcimgr(single_gpu, "handoff", "undefine", "vm1")
    assert r.exit_code == 4 and "refusing to undefine vm1's hand-off: vm1 holds it now" in \
        r.output
    assert pcimgr(single_gpu, "handoff", "release", "vm1").exit_code == 0
    assert pcimgr(single_gpu, "handoff", "undefine", "vm1").exit_code == 0
    assert json.loads(pcimgr(single_gpu, "handoff", "list", "--json").output) == []


def test_one_function_goes_to_one_guest(single_gpu: Path) -> None:
    r = pcimgr(single_gpu, "handoff", "define", "vm2", GPU, "--group", "--framebuffer")
    assert r.exit_code == 2 and "0000:03:00.0 is in vm1's hand-off already" in r.output


def test_a_nic_hand_off_takes_no_display_step(tmp_path: Path) -> None:
    root = desktop(tmp_path)
    assert pcimgr(root, "handoff", "define", "router", NIC).exit_code == 0
    r = pcimgr(root, "handoff", "prepare", "router")
    assert r.exit_code == 0 and driver_of(root, NIC) == "vfio-pci"
    held = json.loads(record(root, "router").read_text())
    assert [s["kind"] for s in held["steps"]] == ["bind"]
    assert dm_active(root) and vtcon1(root) == "1"
    assert pcimgr(root, "handoff", "release", "router").exit_code == 0
    assert driver_of(root, NIC) == "e1000e"


def test_unload_driver_unloads_and_loads_the_module(tmp_path: Path) -> None:
    root = desktop(tmp_path)
    assert pcimgr(root, "handoff", "define", "router", NIC, "--unload-driver").exit_code == 0
    assert pcimgr(root, "handoff", "prepare", "router").exit_code == 0
    assert not (root / "bus/pci/drivers/e1000e").exists()
    assert not (root / "module/e1000e").exists()
    r = pcimgr(root, "handoff", "release", "router")
    assert r.exit_code == 0, r.output
    assert driver_of(root, NIC) == "e1000e" and (root / "module/e1000e/initstate").exists()


def test_doctor_reports_the_hook_and_the_boot_framebuffer(tmp_path: Path) -> None:
    root = desktop(tmp_path, boot_fb=("simple-framebuffer.0", "simpledrm"))
    checks = {c["name"]: c for c in json.loads(pcimgr(root, "doctor", "--json").output)["checks"]}
    assert "handoff-hook" not in checks  # no profile, no hook: nothing to judge
    assert checks["boot-framebuffer"]["status"] == "n/a"
    profile = root / ".pcimgr-config/handoff/vm1.json"
    profile.parent.mkdir(parents=True)
    profile.write_text(json.dumps({
        "format": 1, "vm": "vm1", "addresses": [GPU], "group": True,
        "display_manager": None, "framebuffer": True, "hugepages": None, "isolate_cpus": None,
        "driver": None, "unload_driver": False, "force": False}))
    checks = {c["name"]: c for c in json.loads(pcimgr(root, "doctor", "--json").output)["checks"]}
    assert checks["handoff-hook"]["status"] == "warn"
    assert checks["boot-framebuffer"]["status"] == "warn"
    assert "initcall_blacklist=sysfb_init" in checks["boot-framebuffer"]["fix"]
    r = pcimgr(root, "doctor", "--fix", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "initcall_blacklist=sysfb_init for the hand-off" in r.output
    added = [line for line in r.output.splitlines() if line.startswith("+GRUB_CMDLINE")]
    assert added and "initcall_blacklist=sysfb_init" in added[0], r.output
    assert pcimgr(root, "hook", "install").exit_code == 0
    checks = {c["name"]: c for c in json.loads(pcimgr(root, "doctor", "--json").output)["checks"]}
    assert checks["handoff-hook"]["status"] in ("pass", "warn")
    assert "installed" in checks["handoff-hook"]["detail"]


def test_hook_uninstall_removes_only_its_own_file(single_gpu: Path) -> None:
    script = single_gpu / "etc/libvirt/hooks/qemu.d/pcimgr"
    text = script.read_text()
    script.write_text("#!/bin/sh\necho someone else's\n")
    r = pcimgr(single_gpu, "hook", "uninstall")
    assert r.exit_code == 4 and script.exists()
    script.write_text(text)
    assert pcimgr(single_gpu, "hook", "uninstall").exit_code == 0 and not script.exists()


def test_fbcon_answers_as_the_lab_kernel_did(tmp_path: Path) -> None:
    """The by-hand sequence of tests/lab/test_lab_desktop.py on the simulated desktop laid
    out with the lab boot's consoles (fixtures/display.json), compared as the lab compares
    them: by what each console is, not the number the kernel gave it."""
    recorded = json.loads((Path(__file__).parent / "lab/fixtures/display.json").read_text())
    fbcon, dummy = "(M) frame buffer device", "(M) dummy device"
    root = desktop(tmp_path, vtcons=tuple((c["name"], c["bind"] == "1")
                                          for c in recorded["vtconsoles"]))

    def consoles() -> list[tuple[str, str]]:
        d = root / "class/vtconsole"
        return sorted(((v / "name").read_text().strip(), (v / "bind").read_text().strip())
                      for v in d.iterdir())
    assert consoles() == [(c["name"], c["bind"]) for c in recorded["vtconsoles"]]
    assert consoles() == [(dummy, "0"), (fbcon, "1")]
    assert pcimgr(root, "unbind", GPU, "--force").exit_code == 0
    assert consoles() == [(dummy, "1")]
    assert pcimgr(root, "rebind", GPU).exit_code == 0
    assert consoles() == [(dummy, "0"), (fbcon, "1")]


@pytest.fixture(scope="module")
def prepare_writes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, int, str]]:
    """The writes of the single-GPU prepare, as strace saw them: sysfs, the desktop's state
    (the units), the journal and the records."""
    from tests.strace_faults import STRACE, points
    from tests.strace_faults import pcimgr as traced
    if STRACE is None:
        pytest.skip("strace is not installed (scripts/run installs it)")
    root = desktop(tmp_path_factory.mktemp("trace"))
    assert pcimgr(root, "handoff", "define", *SINGLE_GPU).exit_code == 0
    log = root.parent / "strace.log"
    r = traced(root, "handoff", "prepare", "vm1", trace=log, calls=("write", "renameat"))
    assert r.returncode == 0, r.stderr
    found = points(log, ("write", "renameat"), ("/bus/pci/", "vtconsole", ".pcimgr-desktop",
                                                "journal", "handoffs"))
    assert len(found) > 8
    return [tuple(p) for p in found]


def test_a_kill_at_any_write_of_prepare_is_finished_or_undone(
        tmp_path: Path, prepare_writes: list[tuple[str, int, str]]) -> None:
    """SIGKILL from outside (strace) at each write: `recover` leaves the host as it was, or
    the hand-off whole with its record, which release then gives back."""
    from tests.strace_faults import pcimgr as traced
    failures = []
    for n, (call, ordinal, line) in enumerate(prepare_writes):
        root = desktop(tmp_path, name=f"k{n}")
        assert pcimgr(root, "handoff", "define", *SINGLE_GPU).exit_code == 0
        killed = traced(root, "handoff", "prepare", "vm1",
                        inject=f"{call}:signal=SIGKILL:when={ordinal}")
        after = pcimgr(root, "recover")
        if record(root).exists():  # it had finished: the guest would have it
            after = pcimgr(root, "handoff", "release", "vm1")
        as_before = (driver_of(root, GPU), driver_of(root, AUDIO), dm_active(root),
                     vtcon1(root)) == ("amdgpu", "snd_hda_intel", True, "1")
        if killed.returncode != -9 or after.exit_code != 0 or not as_before or \
                record(root).exists() or (root / ".pcimgr-state/journal.json").exists():
            failures.append(f"kill at {line[:80]}: exit {killed.returncode}, then "
                            f"{after.exit_code} {after.output.strip()[:160]!r}")
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("step, words", [
    ({"kind": "stop-unit", "unit": "debug-shell.service", "nodes": []},
     "starts debug-shell.service"),
    ({"kind": "hugepages", "size_kb": 1048576, "before": 16000000, "target": 16000001},
     "changes a hugepage pool"),
    ({"kind": "allowed-cpus", "unit": "system.slice", "allowed": "0-3", "before": "0"},
     "sets system.slice's AllowedCPUs to 0"),
    ({"kind": "unload-module", "kernel_module": "usb_storage"}, "loads the module usb_storage"),
    ({"kind": "unbind-console", "vtcon": "vtcon1", "vm": "vm2"}, "holds a step of vm2's"),
])
def test_a_record_is_held_to_its_profile(single_gpu: Path, step: dict, words: str) -> None:
    """A record is data on disk: each step's undo must be one its profile allows."""
    assert pcimgr(single_gpu, "handoff", "prepare", "vm1").exit_code == 0
    held = json.loads(record(single_gpu).read_text())
    held["steps"].append({"module": "pcimgr.handoff.steps", "address": GPU, "vm": "vm1",
                          **step})
    record(single_gpu).write_text(json.dumps(held))
    r = pcimgr(single_gpu, "handoff", "release", "vm1")
    assert r.exit_code == 4 and words in r.output, r.output
    assert driver_of(single_gpu, GPU) == "vfio-pci"  # nothing undone


def test_a_journal_is_held_to_its_profile(single_gpu: Path) -> None:
    """recover vets a killed prepare's hand-off steps against the guest's profile too."""
    from tests.killed import run_killed_after
    assert run_killed_after("drivers_probe", "--sysfs-root", str(single_gpu), "handoff",
                            "prepare", "vm1") == 9
    journal = single_gpu / ".pcimgr-state/journal.json"
    data = json.loads(journal.read_text())
    data["steps"][0]["step"]["unit"] = "debug-shell.service"
    journal.write_text(json.dumps(data))
    r = pcimgr(single_gpu, "recover")
    assert r.exit_code == 11 and "starts debug-shell.service" in r.output
    assert not dm_active(single_gpu)


def test_release_after_a_killed_prepare_undoes_it(single_gpu: Path) -> None:
    """libvirt runs release after a prepare that failed: it goes through the lock, whose
    recovery undoes the killed prepare's journal."""
    from tests.killed import run_killed_after
    assert run_killed_after("drivers_probe", "--sysfs-root", str(single_gpu), "handoff",
                            "prepare", "vm1") == 9
    r = hook(single_gpu, "vm1", "release", "end")
    assert r.returncode == 0, r.stderr
    assert "undid its 3 started step(s)" in r.stderr
    assert driver_of(single_gpu, GPU) == "amdgpu" and dm_active(single_gpu)


def test_a_profile_is_not_redefined_while_its_guest_holds_it(single_gpu: Path) -> None:
    assert pcimgr(single_gpu, "handoff", "prepare", "vm1").exit_code == 0
    r = pcimgr(single_gpu, "handoff", "define", "vm1", NIC)
    assert r.exit_code == 4 and "refusing to redefine vm1's hand-off: vm1 holds it now" in \
        r.output


def test_a_session_that_outlives_the_display_manager_is_rolled_back(tmp_path: Path,
                                                                    mocker) -> None:
    """GDM's greeter and X sessions are login sessions (session-N.scope): allowed to hold
    the card while the display manager is to stop, then waited for; one that stays fails
    the step, and the display manager is started again."""
    root = desktop(tmp_path, holders={"/dev/dri/card0": ((2210, "gnome-shell",
                                                          "session-2.scope"),)})
    assert pcimgr(root, "handoff", "define", *SINGLE_GPU).exit_code == 0
    mocker.patch("pcimgr.handoff.steps.SESSION_TIMEOUT", 0.3)
    r = pcimgr(root, "handoff", "prepare", "vm1")
    assert r.exit_code == 7, r.output
    assert "/dev/dri/card0 is still open by gnome-shell[2210] (session-2.scope)" in r.output
    assert dm_active(root) and driver_of(root, GPU) == "amdgpu"


def test_a_display_manager_that_holds_nothing_is_left_running(tmp_path: Path) -> None:
    root = desktop(tmp_path, units={"display-manager.service": UnitSpec("gdm.service")})
    assert pcimgr(root, "handoff", "define", *SINGLE_GPU).exit_code == 0
    assert pcimgr(root, "handoff", "prepare", "vm1").exit_code == 0
    assert dm_active(root)
    assert [s["kind"] for s in json.loads(record(root).read_text())["steps"]][0] != "stop-unit"


def test_unload_driver_counts_every_function_the_driver_has(tmp_path: Path) -> None:
    from pcimgr.sim.profiles import NET, DeviceSpec
    base = profiles.desktop()
    onboard = DeviceSpec("0000:00:19.0", "8086", "15bc", NET, "e1000e", 20, netdev="eno1")
    root = tmp_path / "sys"
    builder.build(str(root), replace(base, devices=(*base.devices, onboard)))
    r = pcimgr(root, "handoff", "define", "router", NIC, "--unload-driver")
    assert r.exit_code == 4 and "e1000e also drives 0000:00:19.0" in r.output


def test_overlapping_hugepages_give_back_only_their_own(tmp_path: Path) -> None:
    root = desktop(tmp_path)
    pool = root / "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    assert pcimgr(root, "handoff", "define", "a", NIC, "--hugepages", "100").exit_code == 0
    assert pcimgr(root, "handoff", "define", "b", GPU, "--group", "--framebuffer",
                  "--stop-display-manager", "--hugepages", "150").exit_code == 0
    assert pcimgr(root, "handoff", "prepare", "a").exit_code == 0
    (pool.parent / "free_hugepages").write_text("0\n")  # a's QEMU took its pages
    assert pcimgr(root, "handoff", "prepare", "b").exit_code == 0
    assert pool.read_text() == "250\n"
    (pool.parent / "free_hugepages").write_text("250\n")  # a stopped; b has not used its own
    assert pcimgr(root, "handoff", "release", "a").exit_code == 0
    assert pool.read_text() == "150\n"  # b's pages stay while b runs
    assert pcimgr(root, "handoff", "release", "b").exit_code == 0
    assert pool.read_text() == "0\n"


def test_one_hand_off_at_a_time_isolates_cpus(tmp_path: Path) -> None:
    root = desktop(tmp_path)
    assert pcimgr(root, "handoff", "define", "a", NIC, "--isolate-cpus", "8-15").exit_code == 0
    assert pcimgr(root, "handoff", "define", "b", GPU, "--group", "--framebuffer",
                  "--stop-display-manager", "--isolate-cpus", "4-7").exit_code == 0
    assert pcimgr(root, "handoff", "prepare", "a").exit_code == 0
    r = pcimgr(root, "handoff", "prepare", "b")
    assert r.exit_code == 4 and "a's hand-off keeps the host off CPUs now" in r.output


def test_hook_install_refuses_a_program_root_does_not_own(tmp_path: Path) -> None:
    from pcimgr.core.errors import Refused
    from pcimgr.host import trust
    program = tmp_path / "pcimgr"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o777)
    with pytest.raises(Refused, match="writable by its group or others"):
        trust.root_program(str(program))


def test_the_hook_passes_hostile_paths_through_sh_unchanged(tmp_path: Path) -> None:
    """The configuration directory and the program are words of the sh hook: quotes, $,
    backticks, a newline and ESC in them reach pcimgr as they are, and nothing runs."""
    from pcimgr.handoff import hookfile
    odd = tmp_path / "it's $HOME `touch pwned` \n\x1b[31m;"
    (odd / "handoff").mkdir(parents=True)
    (odd / "handoff" / "vm1.json").write_text("{}")
    seen = tmp_path / "argv"
    program = odd / "pcimgr $(touch pwned)"
    program.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > '{seen}'\n")
    program.chmod(0o755)
    script = tmp_path / "hook"
    script.write_text(hookfile.text(str(program), str(odd), ("--state-dir", str(odd))))
    r = subprocess.run(["sh", str(script), "vm1", "prepare", "begin", "-"], input="",
                       capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert r.returncode == 0, r.stderr
    assert seen.read_text().split("\0")[:-1] == [
        "--state-dir", str(odd), "--config-dir", str(odd), "hook", "qemu", "vm1", "prepare",
        "begin", "-"]
    assert not (tmp_path / "pwned").exists() and not (odd / "pwned").exists()
    with pytest.raises(Exception, match="NUL"):
        hookfile.text("/usr/bin/pcimgr", "/etc/pci\0mgr")
