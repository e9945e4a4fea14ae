"""doctor and advise: findings on simulated hosts and on this very machine (no IOMMU)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from pcimgr.advice import netmodes
from tests.conftest import golden
from tests.test_hostdriver import set_host_facts


def checks(run, root, *extra: str) -> tuple[int, dict]:
    r = run("--sysfs-root", root, *extra, "doctor", "--json")
    data = json.loads(r.output.split("\npcimgr:")[0])
    return r.exit_code, data | {"by_name": {c["name"]: c for c in data["checks"]}}


def test_demo_host_can_pass_through(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "doctor")
    assert r.exit_code == 0
    golden("doctor_demo.txt", r.output)
    code, data = checks(run, demo_root)
    assert data["passthrough_possible"] is True
    assert data["by_name"]["groups"]["status"] == "warn"
    assert "5: 0000:04:00.0, 0000:04:00.1" in data["by_name"]["groups"]["detail"]


def test_host_booted_without_the_iommu(run, make_host) -> None:
    root = make_host("demo", iommu=False)
    code, data = checks(run, root)
    assert code == 10 and data["passthrough_possible"] is False
    iommu = data["by_name"]["iommu"]
    assert iommu["status"] == "fail" and "intel_iommu=on" in iommu["fix"]
    assert "update-grub" in iommu["fix"]
    assert data["by_name"]["interrupt-remapping"]["status"] == "fail"


def test_iommu_asked_for_but_off_in_the_firmware(run, make_host) -> None:
    root = make_host("demo", iommu=False)
    set_host_facts(root, cmdline="root=/dev/sda1 intel_iommu=on")
    fix = checks(run, root)[1]["by_name"]["iommu"]["fix"]
    assert "firmware" in fix and "grub" not in fix


def test_missing_vfio_and_vhost(run, demo_root: Path) -> None:
    shutil.rmtree(demo_root / "bus/pci/drivers/vfio-pci")
    (demo_root / "dev/vfio/vfio").unlink()
    (demo_root / "dev/vhost-net").unlink()
    set_host_facts(demo_root, modules=[])
    code, data = checks(run, demo_root)
    assert code == 10
    assert data["by_name"]["vfio"]["status"] == "fail"
    assert data["by_name"]["vhost-net"] == {
        "name": "vhost-net", "status": "warn",
        "detail": "/dev/vhost-net is missing: virtio NICs fall back to QEMU's userspace data path",
        "fix": "modprobe vhost_net, and add vhost_net to /etc/modules"}


def test_no_remapping(run, demo_root: Path) -> None:
    set_host_facts(demo_root, interrupt_remapping=False)
    code, data = checks(run, demo_root)
    assert code == 10 and "allow_unsafe_interrupts" in data["by_name"]["interrupt-remapping"]["fix"]


def test_libvirt_is_asked_with_a_uri(run, demo_root: Path) -> None:
    lv = checks(run, demo_root, "--connect", "test:///default")[1]["by_name"]["libvirt"]
    assert lv["status"] == "pass" and lv["detail"].startswith("libvirt ")


def test_this_machine(run) -> None:
    """The real /sys here: the IOMMU check must agree with /sys/kernel/iommu_groups."""
    here = "/sys/kernel/iommu_groups"
    groups = os.listdir(here) if os.path.isdir(here) else []
    r = run("doctor", "--json")
    data = json.loads(r.output.split("\npcimgr:")[0])
    iommu = {c["name"]: c for c in data["checks"]}["iommu"]
    if groups:
        assert iommu["status"] == "pass"
    else:
        assert iommu["status"] == "fail" and r.exit_code == 10 and "intel_iommu=on" in iommu["fix"]


# -- network modes ------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (("--mode", "e1000", "--bridge", "br0"),
     '<interface type="bridge">\n  <source bridge="br0" />\n  <model type="e1000" />\n'
     '</interface>\n'),
    (("--mode", "virtio", "--bridge", "br0"),
     '<interface type="bridge">\n  <source bridge="br0" />\n  <model type="virtio" />\n'
     '  <driver name="qemu" />\n</interface>\n'),
    (("--mode", "vhost", "--bridge", "br0", "--mac", "52:54:00:5e:00:07"),
     '<interface type="bridge">\n  <mac address="52:54:00:5e:00:07" />\n  <source bridge="br0" />\n'
     '  <model type="virtio" />\n  <driver name="vhost" />\n</interface>\n'),
    (("--mode", "macvtap", "--source-dev", "enp5s0f0"),
     '<interface type="direct">\n  <source dev="enp5s0f0" mode="bridge" />\n'
     '  <model type="virtio" />\n</interface>\n'),
])
def test_xml_modes(run, demo_root: Path, args, expected) -> None:
    r = run("--sysfs-root", demo_root, "xml", *args)
    assert r.exit_code == 0 and r.output == expected


@pytest.mark.parametrize("args, words", [
    (("--mode", "macvtap"), "needs --source-dev"),
    (("--mode", "vhost"), "needs --bridge"),
    (("04:00.0", "--mode", "vhost", "--bridge", "br0"), "--mode takes no ADDRESS"),
    ((), "give the ADDRESS"),
])
def test_xml_mode_errors(run, demo_root: Path, args, words) -> None:
    r = run("--sysfs-root", demo_root, "xml", *args)
    assert r.exit_code == 2 and words in r.output


EVERYTHING = netmodes.HostAbilities(vhost_net=True, passthrough=True, free_vf="0000:05:10.0",
                                    free_nic="0000:04:00.0")


@pytest.mark.parametrize("guest, load, host, modes", [
    ("linux", "low", EVERYTHING, ["vhost", "macvtap"]),
    ("linux", "high", EVERYTHING, ["vhost", "sr-iov", "macvtap"]),
    ("linux", "high", netmodes.HostAbilities(False, False, None, None), ["virtio", "macvtap"]),
    ("windows", "low", EVERYTHING, ["e1000", "vhost"]),
    ("windows", "high", EVERYTHING, ["sr-iov", "passthrough", "vhost", "macvtap"]),
    ("windows", "high", netmodes.HostAbilities(True, False, "0000:05:10.0", None),
     ["vhost", "macvtap"]),
])
def test_advice_table(guest, load, host, modes) -> None:
    advice = netmodes.advise(guest, load, host, "br0", "enp5s0f0")
    assert [a.mode for a in advice] == modes
    for a in advice:
        if a.mode == "macvtap" and guest == "windows":
            assert a.xml is None and "poor choice" in a.why
        if a.mode == "sr-iov" and guest == "windows":
            assert any("VF driver" in c for c in a.notes)
        if a.mode in ("vhost", "virtio") and a.xml:
            assert '<model type="virtio" />' in a.xml  # vhost_net only with virtio


def test_advise_on_the_demo_host(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "advise", "--guest-os", "windows", "--load", "low",
            "--json")
    data = json.loads(r.output)
    assert data["recommendation"]["mode"] == "e1000"
    assert '<model type="e1000" />' in data["recommendation"]["xml"]
    r = run("--sysfs-root", demo_root, "advise", "--guest-os", "windows")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("Recommended: sr-iov")
    assert "note: Windows needs the NIC vendor's VF driver" in r.output


def test_a_check_that_cannot_run_says_n_a(run, make_host) -> None:  # type: ignore[no-untyped-def]
    """No IOMMU groups, no link files: `groups` and `links` cannot judge, and say so
    instead of passing (issue 24)."""
    import json as _json
    root = make_host("demo", iommu=False)
    for fn in (root / "bus/pci/devices").iterdir():
        for name in ("current_link_speed", "current_link_width", "max_link_speed",
                     "max_link_width"):
            (fn / name).unlink(missing_ok=True)
    checks = {c["name"]: c for c in _json.loads(
        run("--sysfs-root", root, "doctor", "--json").output.split("\npcimgr:")[0])["checks"]}
    assert checks["groups"]["status"] == "n/a" and "no IOMMU groups" in checks["groups"]["detail"]
    assert checks["links"]["status"] == "n/a"
    text = run("--sysfs-root", root, "doctor").output
    assert "[N/A ] groups" in text and "[PASS] groups" not in text


def test_a_bridge_the_bus_does_not_list_keeps_its_functions(run, demo_root) -> None:  # type: ignore[no-untyped-def]
    """A captured server's root port had its directory but no bus/pci/devices link: what
    is behind it stays in `tree`, and its link is not called degraded against a maximum
    nobody read (issue 24)."""
    import json as _json
    (demo_root / "bus/pci/devices/0000:00:1d.0").unlink()  # the X710's root port
    roots = {n["address"] for n in _json.loads(run("--sysfs-root", demo_root, "tree",
                                                   "--json").output)}
    assert "0000:06:00.0" in roots
    checks = {c["name"]: c for c in _json.loads(
        run("--sysfs-root", demo_root, "doctor", "--json").output.split("\npcimgr:")[0])["checks"]}
    assert checks["links"]["status"] == "pass"
    assert "not judged: 0000:06:00.0" in checks["links"]["detail"]
    shown = run("--sysfs-root", demo_root, "show", "06:00.0").output
    assert "DEGRADED" not in shown
