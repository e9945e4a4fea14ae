"""One sequence of sysfs writes, applied to a real kernel (the lab) and to the `lab` simulated host.

Both go through pcimgr's sysfs layer. After every write the observation records
the errno (or none) and the state: each function's driver, driver_override and
IOMMU group, the igb PF's VFs and limits, and the /dev/vfio nodes. The real
kernel's observations are kept in fixtures/ (refresh: python -m tests.lab.refresh),
so the simulated kernel is held to them without booting the lab.
"""

from __future__ import annotations

import errno
import json
import os
import sys
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


def run_sequence(sysfs: Sysfs) -> list[dict]:
    observations = [{"write": None, "error": None, "state": snapshot(sysfs)}]
    for rel, value in SEQUENCE:
        error = None
        try:
            sysfs.write_attr(rel, value)
        except KernelError as e:
            error = errno.errorcode.get(e.errno or 0, str(e.errno))
        observations.append({"write": [rel, value], "error": error, "state": snapshot(sysfs)})
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


def load_fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def main(argv: list[str]) -> int:
    """`record PATH` inside the lab guest: run the sequence on /sys and save it."""
    if len(argv) != 2 or argv[0] != "record":
        print("usage: python -m tests.lab.conformance record PATH", file=sys.stderr)
        return 2
    os.system("modprobe vfio-pci")
    observations = run_sequence(Sysfs("/sys"))
    for command in STACK_COMMANDS:
        if os.system(command) != 0:
            print(f"failed: {command}", file=sys.stderr)
            return 1
    Path(argv[1]).write_text(json.dumps({
        "kernel": os.uname().release,
        "observations": observations,
        "layout": layout(Sysfs("/sys")),
    }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
