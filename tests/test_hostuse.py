"""The host-dependency survey on the shapes real servers have (the `server` profile): every
change command refuses, names the chain, and writes nothing; list/show say what the host
uses each function for; define, apply and status hold the same line."""

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import Refused
from pcimgr.drivers import planner as drivers
from pcimgr.host import discovery, usage
from pcimgr.persist import definitions
from pcimgr.sim import builder, profiles
from pcimgr.sim.machine import SimulatedMachine
from tests.conftest import driver_of, golden, tree
from tests.test_hostdriver import set_host_facts

VIRTIO_ROUTE = "interface eth0 (via virtio0) carries the default route"
USB_NFS = ("interface enx00e04c680001 (via 2-1:1.0, 2-1, usb2) is the path to NFS "
           "198.51.100.5:/export/home on /home")
NVME_ROOT = ("block device vg0-root (via dm-0, nvme0n1p2, nvme0n1, nvme-subsys0, nvme0) is "
             "mounted on / (the root filesystem)")
NVME_SWAP = "block device nvme0n1p3 (via nvme0n1, nvme-subsys0, nvme0) is used as swap"
SCSI = "block device sda1 (via sda, 0:0:0:0, target0:0:0, host0, virtio1) is mounted on /srv"
STACK = "interface br0.100 (via br0, bond0, enp2s0f0) has address 192.0.2.30/24"
PORT = "interface enp2s0f1 is enslaved to bond0"
VF_USED = "0000:03:10.0: interface enp3s0f0v0 has address 192.0.2.40/24"


@pytest.fixture
def server(make_host) -> Path:
    return make_host("server")


@pytest.mark.parametrize("args, reason", [
    (["unbind", "00:03.0"], VIRTIO_ROUTE),
    (["detach", "00:03.0"], VIRTIO_ROUTE),
    (["bind", "00:03.0", "vfio-pci"], VIRTIO_ROUTE),
    (["--connect", "test:///default", "assign", "00:03.0", "test", "--dry-run"], VIRTIO_ROUTE),
    (["define", "00:03.0", "--driver", "vfio-pci"], VIRTIO_ROUTE),
    (["unbind", "00:14.0"], USB_NFS),
    (["detach", "01:00.0"], NVME_ROOT),
    (["detach", "01:00.0"], NVME_SWAP),
    (["bind", "01:00.0", "pci-stub"], NVME_ROOT),
    (["unbind", "00:05.0"], SCSI),
    (["detach", "02:00.0", "--group"], STACK),
    (["detach", "02:00.0", "--group"], PORT),
    (["vfs", "destroy", "03:00.0"], VF_USED),
    (["vfs", "create", "03:00.0", "4"], VF_USED),
    (["unbind", "03:00.0"], "its VF " + VF_USED),
    (["unbind", "00:02.0"], "framebuffer fb0 drives the console"),
])
def test_every_change_command_refuses_with_the_chain(run, server: Path, args, reason) -> None:
    before = tree(server)
    r = run("--sysfs-root", server, *args)
    assert r.exit_code == 4, r.output
    assert reason in r.output and r.output.count("\n") == 1, r.output
    assert tree(server) == before
    assert not (server / ".pcimgr-config").exists()


@pytest.mark.parametrize("args", [["bind", "00:1f.0", "vfio-pci"],
                                  ["bind", "00:1f.0", "vfio-pci", "--force"],
                                  ["unbind", "00:1f.4", "--force"],
                                  ["detach", "00:00.0", "--force"],
                                  ["define", "00:1f.0", "--driver", "vfio-pci"]])
def test_chipset_refused_with_or_without_a_driver_even_forced(run, server: Path, args) -> None:
    before = tree(server)
    r = run("--sysfs-root", server, *args)
    assert r.exit_code == 4 and "chipset" in r.output and "not even with --force" in r.output
    assert tree(server) == before


def test_force_yields_where_it_did(run, server: Path) -> None:
    r = run("--sysfs-root", server, "unbind", "00:03.0", "--force")
    assert r.exit_code == 0, r.output
    assert driver_of(server, "0000:00:03.0") is None
    assert not (server / "class/net/eth0").exists()  # the interface went with the driver


def test_a_free_pair_goes(run, server: Path) -> None:
    r = run("--sysfs-root", server, "detach", "04:00.0", "--group")
    assert r.exit_code == 0, r.output
    assert [driver_of(server, a) for a in ("0000:04:00.0", "0000:04:00.1")] == ["vfio-pci"] * 2


def test_list_and_show_say_what_the_host_uses(run, server: Path) -> None:
    r = run("--sysfs-root", server, "list", "--all", "--json")
    assert r.exit_code == 0
    golden("list_all_server.json", r.output)
    uses = {e["address"]: e["host_use"] for e in json.loads(r.output)}
    assert uses["0000:00:03.0"] == ["eth0: address 203.0.113.10/24", "eth0: default route"]
    assert uses["0000:01:00.0"][0] == "dm-0: mounted on /"
    assert uses["0000:04:00.0"] == [] and uses["0000:00:1f.0"] == ["chipset ISA/LPC bridge"]
    r = run("--sysfs-root", server, "show", "00:03.0")
    assert "  host use        interface eth0 (via virtio0) has address" in r.output
    assert f"                  {VIRTIO_ROUTE}\n" in r.output
    assert "  netdevs         eth0\n" in r.output  # virtio's interface is one level lower
    text = run("--sysfs-root", server, "list").output
    assert "eth0: address 203.0.113.10/24 (+1)" in text


def test_status_reports_host_use_and_a_group_left_half(run, server: Path) -> None:
    assert run("--sysfs-root", server, "define", "04:00.0", "--driver", "vfio-pci",
               "--group").exit_code == 0
    cfg = server / ".pcimgr-config"
    (cfg / "devices/0000:04:00.1.json").unlink()  # a half-deleted group
    set_host_facts(server, addresses={"enp4s0f0": ["192.0.2.77/24"]})
    r = run("--sysfs-root", server, "status", "--json")
    assert r.exit_code == 10
    (entry,) = json.loads(r.output.split("\npcimgr:")[0])
    assert ("the host uses it (enp4s0f0: address 192.0.2.77/24): apply will not take it"
            in entry["drift"])
    assert ("IOMMU group 12 is not viable: 0000:04:00.1 on e1000e (define them too, or "
            "undefine this one)") in entry["drift"]
    before = tree(server)
    r = run("--sysfs-root", server, "apply")
    assert r.exit_code == 10 and "skipped 0000:04:00.0: refusing" in r.output
    assert tree(server) == before


def test_apply_never_leaves_a_group_half_on_vfio(run, server: Path) -> None:
    assert run("--sysfs-root", server, "define", "04:00.0", "--driver", "vfio-pci",
               "--group").exit_code == 0
    (server / ".pcimgr-config/devices/0000:04:00.1.json").unlink()
    before = tree(server)
    r = run("--sysfs-root", server, "apply")
    assert r.exit_code == 10
    assert ("skipped 0000:04:00.0: IOMMU group 12 would not be viable: 0000:04:00.1 stays on "
            "e1000e; define them too (`pcimgr define 0000:04:00.0 --driver vfio-pci --group`)"
            in r.output)
    assert tree(server) == before


def test_apply_of_one_device_takes_its_group(run, server: Path) -> None:
    """What udev runs when one function of a defined pair appears: the pair goes together."""
    assert run("--sysfs-root", server, "define", "04:00.1", "--driver", "vfio-pci",
               "--group").exit_code == 0
    r = run("--sysfs-root", server, "apply", "--device", "04:00.0")
    assert r.exit_code == 0, r.output
    assert [driver_of(server, a) for a in ("0000:04:00.0", "0000:04:00.1")] == ["vfio-pci"] * 2


@pytest.mark.parametrize("args, words", [
    (["04:00.0", "--driver", "vfio-pci"], "shares IOMMU group 12 with 0000:04:00.1 (on e1000e)"),
    (["04:00.0", "--driver", "no_such_drv"], "no driver no_such_drv on this host"),
    (["03:00.0", "--vfs", "4"], VF_USED),
])
def test_define_runs_the_checks_of_the_change(run, server: Path, args, words) -> None:
    r = run("--sysfs-root", server, "define", *args)
    assert r.exit_code in (2, 4) and words in r.output and r.output.count("\n") == 1, r.output
    assert not (server / ".pcimgr-config/devices").exists()


# -- property: random hosts, every planner, against an oracle built from the spec ---------

NIC_SHAPES = {"direct": (), "virtio": ("virtio0",), "usb": ("usb1", "1-1", "1-1:1.0")}


@st.composite
def hosts(draw: st.DrawFn) -> tuple[profiles.Profile, set[str]]:
    """A host of NICs (several shapes, shared groups), one disk controller and a chipset,
    with random addresses, routes, stacks and mounts; and the functions the host uses,
    worked out from the spec alone."""
    count = draw(st.integers(2, 6))
    devices = [profiles.DeviceSpec("0000:00:1f.0", "8086", "a306", 0x060100, None, 0)]
    names = []
    for i in range(count):
        shape = draw(st.sampled_from(sorted(NIC_SHAPES)))
        address = f"0000:00:{i + 2:02x}.0"
        group = draw(st.sampled_from([i + 1, 1]))  # some share group 1
        name = f"nic{i}"
        names.append((name, address))
        devices.append(profiles.DeviceSpec(
            address, "8086", "10d3", 0x020000, "e1000e", group, netdev=name,
            net_via=NIC_SHAPES[shape]))
    disk_fn = "0000:00:10.0"
    partitions = ("sda", "sda1", "sda2")
    devices.append(profiles.DeviceSpec(disk_fn, "1af4", "1004", 0x010000, "virtio-pci", 40,
                                       disks=partitions, disk_via=("virtio9", "host0")))
    used = set()
    addressed = draw(st.sets(st.sampled_from(names)))
    routed = draw(st.sets(st.sampled_from(names)))
    bonded = draw(st.sets(st.sampled_from(names), max_size=2))
    bond_addressed = draw(st.booleans())
    addresses = {n: [f"192.0.2.{k + 1}/24"] for k, (n, _) in enumerate(sorted(addressed))}
    routes = {n: ["default"] for n, _ in routed}
    used |= {a for _, a in addressed | routed | bonded}
    stacks = {}
    if bonded:
        stacks["bond0"] = ("bond", sorted(n for n, _ in bonded))
        if bond_addressed:
            addresses["bond0"] = ["198.51.100.1/24"]
    mounts, swaps, dm = {}, [], {}
    disk_use = draw(st.sampled_from(["none", "mount", "swap", "lvm"]))
    if disk_use == "mount":
        mounts["sda1"] = "/"
    elif disk_use == "swap":
        swaps.append("sda2")
    elif disk_use == "lvm":
        dm["dm-0"] = ("vg0-data", ["sda2"])
    if disk_use != "none":
        used.add(disk_fn)
    facts = profiles.HostFacts(addresses=addresses, routes=routes, mounts=mounts, swaps=swaps,
                               net_stacks=stacks, block_stacks=dm)
    profile = profiles.Profile("random", "random", tuple(devices),
                               ("e1000e", "virtio-pci") + profiles.STUBS, host=facts)
    return profile, used


def _plans(machine: SimulatedMachine, address: PciAddress, force: bool) -> list:
    """Each planner that can take a function from the host, refusals dropped."""
    host = discovery.scan_related(machine.sysfs, (address,))
    survey = usage.survey(machine)
    found = []
    for plan in (lambda: drivers.plan_unbind(machine, host, survey, (address,), force),
                 lambda: drivers.plan_bind(machine, host, survey, (address,), "vfio-pci",
                                           force),
                 lambda: drivers.plan_detach(machine, host, survey, (address,), "vfio-pci",
                                             True, force)):
        try:
            found.append(plan())
        except Refused:
            pass
    return found


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=hosts())
def test_no_plan_writes_to_a_function_the_host_uses(tmp_path_factory, spec) -> None:
    profile, used = spec
    root = tmp_path_factory.mktemp("random") / "sys"
    builder.build(str(root), profile)
    machine = SimulatedMachine(str(root))
    survey = usage.survey(machine)
    marked = {str(a) for a, uses in survey.uses.items() if uses}
    assert marked == used  # the survey finds exactly what the spec made the host use
    for d in profile.devices:
        address = PciAddress.parse(d.address)
        for force in (False, True):
            for proposal in _plans(machine, address, force):
                touched = {s.address for s in proposal.plan.steps}
                assert "0000:00:1f.0" not in touched  # the chipset, forced or not
                if not force:
                    assert not touched & used, (d.address, touched & used)


def test_definitions_saved_only_after_checks(run, server: Path) -> None:
    """A refused --group definition writes none of the group's files."""
    set_host_facts(server, addresses={"enp4s0f1": ["192.0.2.99/24"]})
    r = run("--sysfs-root", server, "define", "04:00.0", "--driver", "vfio-pci", "--group")
    assert r.exit_code == 4 and "enp4s0f1: " not in r.output and "enp4s0f1 has address" in r.output
    assert definitions.load_all(str(server / ".pcimgr-config")) == ([], [])


def test_vf_count_definition_checks_like_vfs_create(run, server: Path) -> None:
    # the count it has removes nothing: allowed on the VFs' host driver, while 4 would
    # remove the VF the host uses, and vfio-pci would take it from the host
    r = run("--sysfs-root", server, "define", "03:00.0", "--vfs", "2", "--vf-driver", "host")
    assert r.exit_code == 0, r.output
    assert (server / ".pcimgr-config/devices/0000:03:00.0.json").exists()
    r = run("--sysfs-root", server, "define", "03:00.0", "--vfs", "2", "--vf-driver", "vfio-pci")
    assert r.exit_code == 4 and "0000:03:10.0: interface enp3s0f0v0" in r.output, r.output


def _default_route_function() -> tuple[str, str] | None:
    """This machine's own default-route interface and the PCI function above it, found
    independently of pcimgr (the first PCI address in its sysfs path, from the bottom)."""
    import re
    import subprocess
    routes = json.loads(subprocess.run(["ip", "-j", "route", "show", "default"],
                                       capture_output=True, text=True).stdout or "[]")
    for route in routes:
        path = Path(f"/sys/class/net/{route.get('dev')}").resolve()
        for part in reversed(path.parts):
            if re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", part):
                return route["dev"], part
    return None


@pytest.mark.skipif(_default_route_function() is None,
                    reason="this machine's default route is on no PCI function")
def test_this_machine_keeps_its_own_network(run) -> None:
    """The real /sys and netlink of the machine the tests run on (a VM with virtio-net here):
    a dry run to take its NIC is refused with the chain, as is any definition of it."""
    found = _default_route_function()
    assert found is not None
    ifname, address = found
    for args in (["unbind", address, "--dry-run"], ["bind", address, "pci-stub", "--dry-run"]):
        r = run(*args)
        assert r.exit_code == 4 and f"interface {ifname}" in r.output, r.output
        assert "carries the default route" in r.output
    shown = json.loads(run("show", address, "--json").output)
    assert f"{ifname}: default route" in shown["host_use"]


def test_iscsi_disk_leads_to_the_interface_that_reaches_its_target(run, server: Path) -> None:
    """An iSCSI disk has no PCI function; the NIC that reaches its target is what it needs."""
    session = server / "devices/platform/host3/session1/target3:0:0/3:0:0:0/block/sdb"
    (session / "sdb1").mkdir(parents=True)
    (session / "sdb1/partition").write_text("1\n")
    for d in (session, session / "sdb1"):
        (d / "slaves").mkdir()
        (d / "holders").mkdir()
    for name, target in (("sdb", session), ("sdb1", session / "sdb1")):
        (server / "class/block" / name).symlink_to(os.path.relpath(target, server / "class/block"))
    conn = server / "class/iscsi_connection/connection1:0"
    conn.mkdir(parents=True)
    (conn / "persistent_address").write_text("192.0.2.200\n")
    set_host_facts(server, mounts={"sdb1": "/var/lib/libvirt/images"},
                   routes_to={"192.0.2.200": "enp4s0f0"})
    r = run("--sysfs-root", server, "detach", "04:00.0", "--group")
    assert r.exit_code == 4, r.output
    assert ("interface enp4s0f0 is the path to iSCSI target 192.0.2.200 of sdb1, which is "
            "mounted on /var/lib/libvirt/images") in r.output


def test_a_vlan_on_a_bonded_port_is_not_its_master(server: Path) -> None:
    from pcimgr.sim import tree as simtree
    simtree.stack_net(str(server), "bond1", "bond", ["enp4s0f0"])
    simtree.stack_net(str(server), "enp4s0f0.5", "vlan", ["enp4s0f0"])
    survey = usage.survey(SimulatedMachine(str(server)))
    assert [str(u) for u in survey.of(PciAddress.parse("04:00.0"))] == [
        "interface enp4s0f0 is enslaved to bond1"]


def test_an_interface_name_stands_for_its_function(run, make_host) -> None:  # type: ignore[no-untyped-def]
    """dpdk-devbind users type interfaces: each is resolved once to its function
    (virtio-net's below virtioN too), never to a USB controller or a virtual device."""
    root = make_host("server")
    r = run("--sysfs-root", root, "show", "enp4s0f0", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["address"] == "0000:04:00.0"
    assert json.loads(run("--sysfs-root", root, "show", "eth0", "--json").output)[
        "address"] == "0000:00:03.0"  # virtio-net: .../0000:00:03.0/virtio0/net/eth0
    r = run("--sysfs-root", root, "detach", "enp4s0f0", "--group", "--dry-run")
    assert r.exit_code == 0 and "Plan for `pcimgr detach 0000:04:00.0`" in r.output
    for name, words in (("enx00e04c680001", "another bus below PCI function 0000:00:14.0"),
                        ("bond0", "a virtual interface"),
                        ("nosuch0", "nor an interface of this host")):
        r = run("--sysfs-root", root, "detach", name, "--dry-run")
        assert r.exit_code == 2 and words in r.output and len(r.output.splitlines()) == 1, r.output


def test_ids_stand_for_the_functions_that_have_them(run, demo_root) -> None:  # type: ignore[no-untyped-def]
    """vendor:device as vfio-pci.ids= takes it: one function where one is asked for, every
    one where several may be given (the plan names each), never a guess."""
    r = run("--sysfs-root", demo_root, "show", "8086:10C9", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["address"] == "0000:05:00.0"
    r = run("--sysfs-root", demo_root, "detach", "8086:105e", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "Plan for `pcimgr detach 0000:04:00.0 0000:04:00.1`" in r.output
    r = run("--sysfs-root", demo_root, "detach", "8086:105e", "04:00.1", "--dry-run")
    assert "Plan for `pcimgr detach 0000:04:00.0 0000:04:00.1`" in r.output  # each once
    for args, code, words in (
            (("show", "8086:105e"), 2, "8086:105e is 2 functions (0000:04:00.0, 0000:04:00.1)"),
            (("xml", "1234:5678"), 2, "no PCI function of this host has ids 1234:5678"),
            (("detach", "8086:zzzz"), 2, "not a PCI address")):
        r = run("--sysfs-root", demo_root, *args)
        assert r.exit_code == code and words in r.output and len(r.output.splitlines()) == 1, \
            r.output
    assert run("--sysfs-root", demo_root, "list").exit_code == 0
    assert driver_of(demo_root, "0000:04:00.0") == "e1000e"  # dry runs only
