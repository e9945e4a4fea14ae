"""A property over every change path (issue 22): on random simulated hosts (a profile and
random host-use facts: addresses, routes, mounts, swaps, disks held open), no command, fleet
module or recovery writes to a function the survey marks as used unless forced, and never
to a chipset function, forced or not. Writes are seen as differences in the simulated
tree's driver links and driver_override files (a function gone counts as written)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcimgr.cli.app import cli
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import PcimgrError
from pcimgr.drivers import safety
from pcimgr.fleet import device as fleet_device
from pcimgr.fleet import vfs as fleet_vfs
from pcimgr.fleet.session import Session
from pcimgr.host import discovery, usage
from pcimgr.host.sysfs import Sysfs
from pcimgr.sim import builder, profiles
from pcimgr.sim.machine import SimulatedMachine

PROFILES = ("demo", "server")
DEVICES = "bus/pci/devices"
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@dataclasses.dataclass(frozen=True)
class Shape:
    """What a profile's tree holds, read once from one built copy."""

    functions: tuple[str, ...]
    pfs: tuple[str, ...]
    interfaces: tuple[str, ...]
    blocks: tuple[str, ...]


@cache
def shape(name: str) -> Shape:
    with built(profiles.get(name)) as root:
        functions = tuple(sorted(os.listdir(os.path.join(root, DEVICES))))
        pfs = tuple(a for a in functions
                    if os.path.exists(os.path.join(root, DEVICES, a, "sriov_totalvfs")))
        return Shape(functions, pfs, tuple(sorted(os.listdir(os.path.join(root, "class/net")))),
                     tuple(sorted(os.listdir(os.path.join(root, "class/block")))))


@contextmanager
def built(profile: profiles.Profile) -> Iterator[str]:
    top = tempfile.mkdtemp(dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    try:
        root = os.path.join(top, "sys")
        builder.build(root, profile)
        yield root
    finally:
        shutil.rmtree(top, ignore_errors=True)


@st.composite
def hosts(draw: st.DrawFn) -> tuple[profiles.Profile, Shape]:
    name = draw(st.sampled_from(PROFILES))
    p, s = profiles.get(name), shape(name)
    some = st.lists  # subsets of the names the tree has
    ifs = draw(some(st.sampled_from(s.interfaces), unique=True, max_size=4))
    routed = draw(some(st.sampled_from(s.interfaces), unique=True, max_size=2))
    mounted = draw(some(st.sampled_from(s.blocks), unique=True, max_size=3))
    swapped = draw(some(st.sampled_from(s.blocks), unique=True, max_size=1))
    held = draw(some(st.sampled_from(s.blocks), unique=True, max_size=2))
    h = p.host if draw(st.booleans()) else profiles.HostFacts(
        net_stacks=p.host.net_stacks, block_stacks=p.host.block_stacks)  # the profile's own?
    facts = dataclasses.replace(
        h,
        addresses=h.addresses | {f: [f"198.18.{i}.1/24"] for i, f in enumerate(ifs)},
        routes=h.routes | {f: ["default" if i == 0 else "198.19.0.0/16"]
                           for i, f in enumerate(routed)},
        mounts=h.mounts | {b: "/" if i == 0 else f"/mnt/{b}" for i, b in enumerate(mounted)},
        swaps=[*h.swaps, *swapped],
        open_blocks=h.open_blocks | {b: [f"holder[{100 + i}]"] for i, b in enumerate(held)})
    return dataclasses.replace(p, host=facts), s


# -- the change paths ---------------------------------------------------------------

Action = Callable[[str], bool]   # runs on the tree at root; says whether it forced


def cli_action(*argv: str) -> Action:
    def act(root: str) -> bool:
        CliRunner().invoke(cli, ["--sysfs-root", root, *argv], prog_name="pcimgr")
        return "--force" in argv
    act.__name__ = " ".join(argv)
    return act


def fleet_action(module: str, *args: Any) -> Action:
    def act(root: str) -> bool:
        s = Session(root)
        try:
            if module == "device":
                address, driver, group, persistent, force = args
                fleet_device.ensure(s, PciAddress.parse(address), driver, group, persistent,
                                    force)
            else:
                pf, count, driver, persistent, force = args
                fleet_vfs.ensure(s, PciAddress.parse(pf), count, driver, [], False, persistent,
                                 force, 30.0)
        except PcimgrError:
            pass
        return bool(args[-1])
    act.__name__ = f"fleet {module} {args}"
    return act


LIBVIRT = ("--connect", "test:///default")


@st.composite
def actions(draw: st.DrawFn, s: Shape) -> Action:
    a = draw(st.sampled_from(s.functions))
    pf = draw(st.sampled_from(s.pfs))
    force = ("--force",) if draw(st.booleans()) else ()
    group = ("--group",) if draw(st.booleans()) else ()
    driver = draw(st.sampled_from(("vfio-pci", "pci-stub")))
    count = str(draw(st.integers(1, 3)))
    vf_driver = draw(st.sampled_from(("vfio-pci", "host")))
    choices = [
        cli_action("detach", a, "--driver", driver, *group, *force),
        cli_action("bind", a, driver, *force),
        cli_action("unbind", a, *force),
        cli_action("rebind", a),
        cli_action(*LIBVIRT, "assign", a, "test", *group, "--dry-run"),
        cli_action("vfs", "create", pf, count, "--driver", vf_driver, *force),
        cli_action("vfs", "destroy", pf, *force),
        cli_action("vfs", "set", pf, "0", "--trust", "on"),
        cli_action("define", a, "--driver", driver, *group),
        cli_action("define", pf, "--vfs", count, "--vf-driver", vf_driver),
        cli_action("apply"),
        cli_action("apply", "--device", a),
        cli_action(*LIBVIRT, "pool", "define", "p0", "--pf", pf, "--vfs", count, *force),
        cli_action("pool", "apply"),
        fleet_action("device", a, draw(st.sampled_from(("vfio-pci", "pci-stub", "host"))),
                     bool(group), draw(st.booleans()), bool(force)),
        fleet_action("vfs", pf, int(count), vf_driver, draw(st.booleans()), bool(force)),
    ]
    return draw(st.sampled_from(choices))


# -- what is observed ----------------------------------------------------------------

def drivers(root: str) -> dict[str, tuple[str | None, str | None]]:
    """Each function's driver and driver_override, as the tree shows them."""
    found = {}
    for a in os.listdir(os.path.join(root, DEVICES)):
        d = os.path.join(root, DEVICES, a)
        link = os.path.join(d, "driver")
        driver = os.path.basename(os.readlink(link)) if os.path.islink(link) else None
        try:
            with open(os.path.join(d, "driver_override")) as f:
                override: str | None = f.read().strip()
        except FileNotFoundError:
            override = None
        found[a] = (driver, override)
    return found


def protected(root: str) -> tuple[set[str], set[str]]:
    """(used by the host as the survey says, chipset functions) before a change."""
    machine = SimulatedMachine(root)
    sysfs: Sysfs = machine.sysfs
    host = discovery.scan(sysfs)
    survey = usage.survey(machine)
    used, chipset = set(), set()
    for d in host.devices:
        if safety.chipset(d):
            chipset.add(str(d.address))
        elif any(c.forceable for c in safety.concerns(sysfs, host, [d], survey)):
            used.add(str(d.address))
    return used, chipset


def check(root: str, act: Action) -> None:
    used, chipset = protected(root)
    before = drivers(root)
    forced = act(root)
    after = drivers(root)
    written = {a for a, was in before.items() if after.get(a) != was}
    assert not written & chipset, f"{act.__name__}: wrote to chipset {written & chipset}"
    if not forced:
        assert not written & used, f"{act.__name__}: wrote to used {written & used}"


@SETTINGS
@given(st.data())
def test_no_change_path_writes_to_what_the_host_uses(data: st.DataObject) -> None:
    profile, s = data.draw(hosts())
    with built(profile) as root:
        for act in data.draw(st.lists(actions(s), min_size=1, max_size=3)):
            check(root, act)


# -- recovery -------------------------------------------------------------------------

class Killed(BaseException):
    """A kill -9 after a write: nothing of the transaction's own handling runs."""


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_recovery_writes_only_what_the_killed_change_moved(data: st.DataObject) -> None:
    profile, s = data.draw(hosts())
    a = data.draw(st.sampled_from(s.functions))
    nth = data.draw(st.integers(1, 6))
    with built(profile) as root:
        used, chipset = protected(root)
        before = drivers(root)
        real, calls = Sysfs.write_attr, []

        def write(self: Sysfs, rel: str, value: str) -> None:
            real(self, rel, value)
            calls.append(rel)
            if len(calls) == nth:
                raise Killed
        Sysfs.write_attr = write
        try:
            CliRunner().invoke(cli, ["--sysfs-root", root, "detach", a, "--group"],
                               prog_name="pcimgr")
        except Killed:
            pass
        finally:
            Sysfs.write_attr = real
        CliRunner().invoke(cli, ["--sysfs-root", root, "recover"], prog_name="pcimgr")
        after = drivers(root)
        written = {x for x, was in before.items() if after.get(x) != was}
        assert not written & (used | chipset), (a, nth, written & (used | chipset))
