"""`pcimgr demo`: a guided tour on a simulated host, printing real commands and output."""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Callable

import click

STEPS: tuple[tuple[str, list[str]], ...] = (
    ("The network functions, their drivers, IOMMU groups and SR-IOV state:", ["list"]),
    ("Can this host pass devices through at all? Each check with its fix:", ["doctor"]),
    ("Every IOMMU group, and whether VFIO could use it right now. The two ports of the "
     "82571EB share group 5, so they can only go to a guest together:", ["groups"]),
    ("The PCIe tree: each function under its port, with its link and reset methods; the "
     "X710 trained at x4 in an x8 slot:", ["tree"]),
    ("One function in detail, with its group mates and the XML libvirt needs:",
     ["show", "04:00.0"]),
    ("Just the <hostdev> element, ready for `virsh attach-device`:", ["xml", "04:00.0"]),
    ("The same data as JSON for scripts, here for the ConnectX-5 and its two VFs:",
     ["list", "--json", "--vendor", "15b3"]),
    ("Taking one port alone would leave its group unusable, so pcimgr refuses (exit 4):",
     ["detach", "04:00.0"]),
    ("The management NIC eno1 carries the host's default route and shares its group with "
     "the chipset: refused, whatever you say:", ["detach", "00:1f.6", "--group", "--force"]),
    ("What detaching the whole group would write, without writing it:",
     ["detach", "04:00.0", "--group", "--dry-run"]),
    ("Now for real: both ports go to vfio-pci in one transaction (rolled back on any error):",
     ["detach", "04:00.0", "--group"]),
    ("And back to the driver they had before:", ["rebind", "04:00.0", "04:00.1"]),
    ("SR-IOV: the 82576 can split into up to 7 virtual functions. For guests, pcimgr turns "
     "sriov_drivers_autoprobe off while it creates them, so no host driver or interface ever "
     "appears, binds each VF to vfio-pci, and turns autoprobe back on. The plan:",
     ["vfs", "create", "05:00.0", "3", "--dry-run"]),
    ("Now for real; each VF lands in its own IOMMU group:", ["vfs", "create", "05:00.0", "3"]),
    ("Give VF 0 a fixed MAC and VLAN, set through the PF (what `ip link set DEV vf 0 ...` "
     "does):", ["vfs", "set", "05:00.0", "0", "--mac", "52:54:00:5e:00:01", "--vlan", "100"]),
    ("The limit is sriov_totalvfs, checked before anything is written (exit 2):",
     ["vfs", "create", "05:00.0", "8"]),
    ("And the VFs go away again (refused while a guest or process holds one):",
     ["vfs", "destroy", "05:00.0"]),
    ("Giving the 82571EB to a guest: `pcimgr assign 04:00.0 vm1` detaches the group to "
     "vfio-pci, then attaches the <hostdev> through libvirt (live if the guest runs, to its "
     "configuration if it has one). Here against libvirt's built-in test driver and its "
     "running guest `test`, as a dry run:",
     ["--connect", "test:///default", "assign", "04:00.0", "test", "--group", "--dry-run"]),
    ("Which network mode suits a Windows guest with heavy traffic on this host, and why:",
     ["advise", "--guest-os", "windows", "--load", "high"]),
    ("Keep a function on vfio-pci across reboots (udev applies it at boot, once "
     "`pcimgr install-udev` has installed the rules); `status` shows what drifted (exit 10):",
     ["define", "04:00.0", "--driver", "vfio-pci", "--group"]),
    ("", ["status"]),
)


def run(keep: str | None, invoke: Callable[[list[str]], object]) -> None:
    from pcimgr.sim import builder, profiles
    if keep:
        root = os.path.abspath(keep)
        builder.build(root, profiles.get("demo"))
        _tour(root, invoke)
        click.echo(f"\nThe simulated host stays in {root}; try "
                   f"`pcimgr --sysfs-root {root} list --all`.")
        return
    with tempfile.TemporaryDirectory(prefix="pcimgr-demo-") as tmp:
        root = os.path.join(tmp, "sys")
        builder.build(root, profiles.get("demo"))
        _tour(root, invoke)
        click.echo("\nRun `pcimgr demo --keep DIR` to keep the simulated host and explore it.")


def _tour(root: str, invoke: Callable[[list[str]], object]) -> None:
    click.secho("pcimgr demo: a simulated KVM host (no root, no hardware, no libvirtd)", bold=True)
    click.echo(f"Simulated host in {root}; every command below runs with "
               f"PCIMGR_SYSFS_ROOT={root}\n")
    for text, args in STEPS:
        if text:
            click.echo(text)
        click.secho("$ " + shlex.join(["pcimgr"] + args), fg="cyan")
        invoke(["--sysfs-root", root] + args)  # a refusal prints its line and returns its code
        click.echo("")
