"""One sequence of sysfs writes, applied to a real kernel (the lab) and to the `lab` simulated host.

Both go through pcimgr's sysfs layer. After every write the observation records
the errno (or none) and the state: each function's driver, driver_override and
IOMMU group, the igb PF's VFs and limits, and the /dev/vfio nodes. The real
kernel's observations are kept in fixtures/ (refresh: python -m tests.lab.refresh),
so the simulated kernel is held to them without booting the lab.

A second sequence does the same with the lab's test VFIO variant driver
(pcimgr_test_vfio_pci, tests/lab/variant/), also recording each VF's vfio-dev/
entries, class/vfio-dev and the modules.alias line depmod wrote for it.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pcimgr.core.errors import KernelError
from pcimgr.host.sysfs import Sysfs

FIXTURE = Path(__file__).parent / "fixtures" / "conformance.json"
PF, E1, E2, BRIDGE = "0000:01:00.0", "0000:02:01.0", "0000:02:02.0", "0000:00:04.0"
PAIR = ("0000:03:00.0", "0000:03:00.1")
WATCHED = (PF, E1, E2, BRIDGE, *PAIR)
VF0, VF1 = "0000:01:10.0", "0000:01:10.2"


def dev(address: str, attr: str) -> str:
    return f"bus/pci/devices/{address}/{attr}"


def drv(driver: str, attr: str) -> str:
    return f"bus/pci/drivers/{driver}/{attr}"


PROBE = "bus/pci/drivers_probe"

SEQUENCE: tuple[tuple[str, str], ...] = (
    # driver_override + unbind + drivers_probe to vfio-pci, and back
    (dev(E1, "driver_override"), "vfio-pci"),
    (drv("e1000", "unbind"), E1),
    (PROBE, E1),
    (drv("vfio-pci", "bind"), E1),                 # already bound
    (drv("e1000", "unbind"), E1),                  # not bound to e1000
    (dev(E1, "driver_override"), "\n"),
    (drv("vfio-pci", "unbind"), E1),
    (PROBE, E1),
    # new_id grabs the unbound function with that id, remove_id gives nothing back
    (drv("vfio-pci", "bind"), E2),                 # bound to e1000, no override
    (drv("e1000", "unbind"), E2),
    (drv("vfio-pci", "bind"), E2),                 # unbound, but no id matches
    (drv("vfio-pci", "new_id"), "8086 100e"),
    (drv("vfio-pci", "new_id"), "8086 100e"),      # twice
    (drv("vfio-pci", "remove_id"), "8086 100e"),
    (drv("vfio-pci", "remove_id"), "8086 100e"),   # gone already
    (drv("vfio-pci", "unbind"), E2),
    (PROBE, E2),
    # vfio-pci refuses a bridge
    (dev(BRIDGE, "driver_override"), "vfio-pci"),
    (drv("vfio-pci", "bind"), BRIDGE),
    (dev(BRIDGE, "driver_override"), ""),
    # SR-IOV on the 82576
    (dev(PF, "sriov_numvfs"), "2"),
    (dev(PF, "sriov_numvfs"), "3"),
    (dev(PF, "sriov_numvfs"), "8"),
    (dev(PF, "sriov_numvfs"), "2"),                # same count
    (dev(PF, "sriov_numvfs"), "0"),
    (dev(PF, "sriov_drivers_autoprobe"), "0"),
    (dev(PF, "sriov_numvfs"), "2"),
    (PROBE, VF0),                                  # autoprobe off, no override: stays unbound
    (dev(VF0, "driver_override"), "vfio-pci"),
    (PROBE, VF0),
    (dev(VF1, "driver_override"), "vfio-pci"),
    (PROBE, VF1),
    (dev(PF, "vendor"), "0x8086"),                 # read-only attribute
    # unbinding the PF driver destroys its VFs
    (drv("igb", "unbind"), PF),
    (dev(PF, "sriov_numvfs"), "1"),                # no PF driver
    (dev(PF, "driver_override"), "vfio-pci"),
    (PROBE, PF),
    (dev(PF, "sriov_numvfs"), "1"),                # vfio-pci without enable_sriov
    (dev(PF, "driver_override"), "\n"),
    (drv("vfio-pci", "unbind"), PF),
    (PROBE, PF),
    (dev(PF, "sriov_drivers_autoprobe"), "1"),
    (PROBE, "0000:0f:00.0"),                       # no such function
)


def snapshot(sysfs: Sysfs) -> dict:
    numvfs = int(sysfs.read_attr(dev(PF, "sriov_numvfs")) or 0)
    vfs = [os.path.basename(sysfs.read_link(dev(PF, f"virtfn{i}")) or "") for i in range(numvfs)]
    functions = {}
    for address in (*WATCHED, *vfs):
        group = sysfs.read_link(dev(address, "iommu_group"))
        driver = sysfs.read_link(dev(address, "driver"))
        functions[address] = {
            "driver": os.path.basename(driver) if driver else None,
            "driver_override": sysfs.read_attr(dev(address, "driver_override")),
            "iommu_group": int(os.path.basename(group)) if group else None,
        }
    vfio_dir = os.path.join(sysfs.dev_root, "vfio")
    return {
        "functions": functions,
        "vfs": vfs,
        "sriov_totalvfs": sysfs.read_attr(dev(PF, "sriov_totalvfs")),
        "sriov_drivers_autoprobe": sysfs.read_attr(dev(PF, "sriov_drivers_autoprobe")),
        "dev_vfio": sorted(os.listdir(vfio_dir)) if os.path.isdir(vfio_dir) else [],
    }


def run_sequence(sysfs: Sysfs, sequence: tuple[tuple[str, str], ...] = SEQUENCE,
                 observe: Callable[[Sysfs], dict] = snapshot) -> list[dict]:
    observations = [{"write": None, "error": None, "state": observe(sysfs)}]
    for rel, value in sequence:
        error = None
        try:
            sysfs.write_attr(rel, value)
        except KernelError as e:
            error = errno.errorcode.get(e.errno or 0, str(e.errno))
        observations.append({"write": [rel, value], "error": error, "state": observe(sysfs)})
    return observations


# The host-dependency shapes (issue 11): stacks made in the guest by these commands,
# and declared to the simulated host by the same facts (profiles.HostFacts).
STACK_COMMANDS = (
    "modprobe bonding", "modprobe 8021q", "modprobe macvlan", "modprobe dm-mod",
    "ip link add bond0 type bond", "ip link set enp0s6 master bond0",
    "ip link add br0 type bridge", "ip link set bond0 master br0",
    "ip link add link br0 name br0.10 type vlan id 10",
    "ip link add mv0 link enp3s0f0 type macvlan",
    "dmsetup create vg0-root --table '0 63488 linear /dev/nvme0n1p3 0'",
)
NET_STACKS = {"bond0": ("bond", ["enp0s6"]), "br0": ("bridge", ["bond0"]),
              "br0.10": ("vlan", ["br0"]), "mv0": ("macvlan", ["enp3s0f0"])}
BLOCK_STACKS = {"dm-0": ("vg0-root", ["nvme0n1p3"])}
_STACK_LINKS = ("master", "partition")


def layout(sysfs: Sysfs) -> dict:
    """Where each interface and block device sits, and the links of its stacks."""
    def where(rel: str) -> str:
        real = sysfs.resolve(rel)
        return real[len(sysfs.root) + 1:]

    found: dict[str, dict] = {}
    for cls in ("class/net", "class/block"):
        for name in sysfs.list_dir(cls):
            if sysfs.read_link(f"{cls}/{name}") is None or name == "lo":
                continue  # bonding_masters is a file; the loopback is no device's
            entries = sysfs.list_dir(f"{cls}/{name}")
            found[f"{cls}/{name}"] = {
                "path": where(f"{cls}/{name}"),
                "links": sorted(e for e in entries
                                if e.startswith(("lower_", "upper_")) or e in _STACK_LINKS),
                "slaves": sysfs.list_dir(f"{cls}/{name}/slaves"),
                "holders": sysfs.list_dir(f"{cls}/{name}/holders"),
                "dm_name": sysfs.read_attr(f"{cls}/{name}/dm/name"),
            }
    subsystems = "devices/virtual/nvme-subsystem"
    for subsys in sysfs.list_dir(subsystems):
        found[f"{subsystems}/{subsys}"] = {
            "controllers": {n: where(f"{subsystems}/{subsys}/{n}")
                            for n in sysfs.list_dir(f"{subsystems}/{subsys}")
                            if n.startswith("nvme")
                            and sysfs.read_link(f"{subsystems}/{subsys}/{n}")}}
    return found


# The test VFIO variant driver (tests/lab/variant/, built on the host by tests/lab/variant.py):
# bound through driver_override only, its id being PCI_DRIVER_OVERRIDE_DEVICE_VFIO's
VARIANT = "pcimgr_test_vfio_pci"
VARIANT_SEQUENCE: tuple[tuple[str, str], ...] = (
    (dev(PF, "sriov_numvfs"), "2"),
    (dev(VF0, "driver_override"), VARIANT),
    (drv("igbvf", "unbind"), VF0),
    (PROBE, VF0),                                  # vfio-dev/vfioN and /dev/vfio/<group>
    (drv(VARIANT, "bind"), VF0),                   # already bound
    (drv("igbvf", "unbind"), VF1),
    (drv(VARIANT, "bind"), VF1),                   # no override: its id is override-only
    (drv(VARIANT, "new_id"), "8086 10ca"),         # a dynamic id binds the unbound VF
    (drv(VARIANT, "remove_id"), "8086 10ca"),
    (drv(VARIANT, "unbind"), VF1),
    (PROBE, VF1),                                  # the dynamic id gone: igbvf again
    (dev(VF1, "driver_override"), VARIANT),
    (drv("igbvf", "unbind"), VF1),
    (PROBE, VF1),                                  # the second VF's vfio-dev and node
    (dev(VF0, "driver_override"), "\n"),
    (drv(VARIANT, "unbind"), VF0),                 # vfio-dev and the node go with it
    (PROBE, VF0),
    (dev(VF1, "driver_override"), "\n"),
    (drv(VARIANT, "unbind"), VF1),
    (PROBE, VF1),
    (dev(PF, "sriov_numvfs"), "0"),
)


def variant_snapshot(sysfs: Sysfs) -> dict:
    """snapshot() of the PF and its VFs, with each VF's vfio-dev/ entries (Linux >= 6.1
    registers a VFIO device there) and where class/vfio-dev's links lead."""
    state = snapshot(sysfs)
    state["functions"] = {a: f for a, f in state["functions"].items()
                          if a == PF or a in state["vfs"]}
    for address in state["vfs"]:
        vdir = dev(address, "vfio-dev")
        state["functions"][address]["vfio_dev"] = {
            name: sysfs.list_dir(f"{vdir}/{name}") for name in sysfs.list_dir(vdir)}
    state["class_vfio_dev"] = {
        name: sysfs.resolve(f"class/vfio-dev/{name}")[len(sysfs.root) + 1:]
        for name in sysfs.list_dir("class/vfio-dev")}
    return state


def run_variant_sequence(sysfs: Sysfs) -> list[dict]:
    return run_sequence(sysfs, VARIANT_SEQUENCE, variant_snapshot)


def simulated_variant_observations(root: str) -> list[dict]:
    """The variant sequence on a `lab` simulated host built at root with the test variant
    loaded and its recorded modules.alias line: what tests/test_conformance.py holds to the
    fixture's `variant`."""
    from dataclasses import replace

    from pcimgr.sim import builder, profiles
    from pcimgr.sim.machine import SimulatedMachine
    lab = profiles.get("lab")
    host = replace(lab.host, modules_alias=tuple(load_fixture()["variant"]["modules_alias"]))
    builder.build(root, replace(lab, drivers=(*lab.drivers, VARIANT), host=host))
    return run_variant_sequence(SimulatedMachine(root).sysfs)


def variant_aliases(modules_alias: str) -> list[str]:
    """The lines of a modules.alias that name the test variant (as depmod wrote them)."""
    return [line for line in modules_alias.splitlines() if line.split()[-1:] == [VARIANT]]


def variant_tree() -> tuple[Path | None, str]:
    """Inside the lab guest: the harness's modules tree with the test variant
    (pcimgr.variant= on the command line), or None and why it could not be had."""
    from tests.lab.harness import given
    return given("variant", "the test variant driver")


def record_variant() -> dict:
    """The variant sequence on the guest's /sys, the tree bound over /lib/modules/<version>
    for the while (every other scenario's igb VFs must keep choosing vfio-pci)."""
    tree, why = variant_tree()
    if tree is None:
        raise RuntimeError(why)
    modules = Path("/lib/modules") / os.uname().release
    subprocess.run(["mount", "--bind", str(tree), str(modules)], check=True)
    try:
        subprocess.run(["modprobe", "igbvf"], check=True)
        subprocess.run(["modprobe", VARIANT], check=True)
        return {"module": VARIANT,
                "modules_alias": variant_aliases((modules / "modules.alias").read_text()),
                "observations": run_variant_sequence(Sysfs("/sys"))}
    finally:
        subprocess.run(["rmmod", VARIANT])
        subprocess.run(["umount", "-l", str(modules)], check=True)


# The mdev core and the kernel's mtty sample (24 ports; mtty-1 takes one, mtty-2 two)
MDEV_PARENT = "mtty"
M1, M2, M3 = ("c0ffee00-0000-4000-8000-000000000001", "c0ffee00-0000-4000-8000-000000000002",
              "c0ffee00-0000-4000-8000-00000000000a")


def mtty_type(type_id: str, attr: str) -> str:
    return f"class/mdev_bus/{MDEV_PARENT}/mdev_supported_types/{type_id}/{attr}"


def mdev_attr(uuid: str, attr: str) -> str:
    return f"bus/mdev/devices/{uuid}/{attr}"


MDEV_SEQUENCE: tuple[tuple[str, str], ...] = (
    (mtty_type("mtty-2", "create"), M1),
    (mtty_type("mtty-2", "create"), M1),           # a UUID in use
    (mtty_type("mtty-1", "create"), "not-a-uuid"),
    (mtty_type("mtty-1", "create"), M2.upper()),   # upper case: the kernel's is lower
    (mdev_attr(M2, "remove"), "0"),                # 0: nothing
    (mdev_attr(M2, "remove"), "1"),
    (mdev_attr(M2, "remove"), "1"),                # gone
    # the 24 ports taken: 11 more dual-port mdevs, then one single-port mdev is refused
    *((mtty_type("mtty-2", "create"), f"c0ffee00-0000-4000-8000-1000000000{n:02x}")
      for n in range(11)),
    (mtty_type("mtty-1", "create"), M3),
    *((mdev_attr(f"c0ffee00-0000-4000-8000-1000000000{n:02x}", "remove"), "1")
      for n in range(11)),
    (mdev_attr(M1, "remove"), "1"),
)


def mdev_snapshot(sysfs: Sysfs) -> dict:
    """The parent's types with what they count, and every mdev: its directory's entries,
    its type, driver, IOMMU group (and the group's type), uevent and vfio-dev/."""
    parent = f"class/mdev_bus/{MDEV_PARENT}"
    types = {}
    for type_id in sysfs.list_dir(f"{parent}/mdev_supported_types"):
        rel = f"{parent}/mdev_supported_types/{type_id}"
        types[type_id] = {"entries": sysfs.list_dir(rel),
                          **{a: sysfs.read_attr(f"{rel}/{a}") for a in (
                              "name", "device_api", "available_instances", "description")},
                          "devices": sysfs.list_dir(f"{rel}/devices")}
    mdevs = {}
    for uuid in sysfs.list_dir("bus/mdev/devices"):
        group = sysfs.read_link(mdev_attr(uuid, "iommu_group"))
        number = os.path.basename(group) if group else None
        mdevs[uuid] = {
            "entries": sysfs.list_dir(f"bus/mdev/devices/{uuid}"),
            "parent": (sysfs.read_link(f"bus/mdev/devices/{uuid}") or "").split("/")[-2:-1],
            **{name: os.path.basename(sysfs.read_link(mdev_attr(uuid, name)) or "") or None
               for name in ("mdev_type", "driver", "subsystem")},
            "iommu_group": number,
            "group_type": sysfs.read_attr(f"kernel/iommu_groups/{number}/type")
            if number else None,
            "uevent": sysfs.read_attr(mdev_attr(uuid, "uevent")),
            "vfio_dev": {n: sysfs.list_dir(f"bus/mdev/devices/{uuid}/vfio-dev/{n}")
                         for n in sysfs.list_dir(f"bus/mdev/devices/{uuid}/vfio-dev")},
        }
    vfio_dir = os.path.join(sysfs.dev_root, "vfio")
    return {"parent_entries": sysfs.list_dir(parent), "types": types, "mdevs": mdevs,
            "mdev_drivers": sysfs.list_dir("bus/mdev/drivers"),
            "dev_vfio": sorted(os.listdir(vfio_dir)) if os.path.isdir(vfio_dir) else []}


def run_mdev_sequence(sysfs: Sysfs) -> list[dict]:
    return run_sequence(sysfs, MDEV_SEQUENCE, mdev_snapshot)


def simulated_mdev_observations(root: str) -> list[dict]:
    """The mdev sequence on a `lab` simulated host with the mtty sample registered."""
    from dataclasses import replace

    from pcimgr.sim import builder, profiles
    from pcimgr.sim.machine import SimulatedMachine
    lab = profiles.get("lab")
    builder.build(root, replace(lab, mdev_parents=(profiles.MTTY,)))
    return run_mdev_sequence(SimulatedMachine(root).sysfs)


def record_mdev() -> dict:
    from tests.lab import mdev_samples
    directory, why = mdev_samples.in_guest()
    if directory is None:
        raise RuntimeError(why)
    mdev_samples.load(directory)
    try:
        return {"module": "mtty", "observations": run_mdev_sequence(Sysfs("/sys"))}
    finally:
        mdev_samples.unload()


def load_fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def main(argv: list[str]) -> int:
    """`record PATH` inside the lab guest: run the sequence on /sys and save it."""
    if len(argv) != 2 or argv[0] != "record":
        print("usage: python -m tests.lab.conformance record PATH", file=sys.stderr)
        return 2
    os.system("modprobe vfio-pci")
    observations = run_sequence(Sysfs("/sys"))
    try:
        variant = record_variant()
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"no variant observations: {e}", file=sys.stderr)
        return 1
    try:
        mdev = record_mdev()
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"no mdev observations: {e}", file=sys.stderr)
        return 1
    for command in STACK_COMMANDS:
        if os.system(command) != 0:
            print(f"failed: {command}", file=sys.stderr)
            return 1
    Path(argv[1]).write_text(json.dumps({
        "kernel": os.uname().release,
        "observations": observations,
        "variant": variant,
        "mdev": mdev,
        "layout": layout(Sysfs("/sys")),
    }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
