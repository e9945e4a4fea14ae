"""Guests: assign and release through libvirt."""

from __future__ import annotations

from typing import Any

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import (
    ADDRESS,
    DOMAIN,
    dry_run_option,
    force_option,
    mac_option,
    timeout_option,
    vlan_option,
)
from pcimgr.cli.runner import change
from pcimgr.core.address import PciAddress


@click.command()
@click.argument("address", type=ADDRESS)
@click.argument("vm", type=DOMAIN)
@click.option("--live/--no-live", default=None,
              help="Hot-plug into the running guest [default: if it is running].")
@click.option("--config/--no-config", default=None,
              help="Add to the persistent configuration [default: if it has one].")
@click.option("--group", is_flag=True,
              help="Also detach the other functions of the IOMMU group (VFIO needs all).")
@click.option("--managed/--unmanaged", default=False,
              help="managed='yes' hands host binding to libvirt; by default pcimgr binds and "
                   "remembers the original driver (managed='no').")
@mac_option
@vlan_option
@dry_run_option
@force_option
@click.pass_obj
def assign(obj: Context, address: PciAddress, vm: str, live: bool | None, config: bool | None,
           group: bool, managed: bool, mac: str | None, vlan: int | None, dry_run: bool,
           force: bool) -> None:
    """Give a function to guest VM: detach it to vfio-pci, then attach it through libvirt.

    An SR-IOV VF of a NIC with --mac/--vlan goes in as <interface type='hostdev'>.
    """
    from pcimgr.guests import assign as assigning

    def propose(host: Any, state: Any, _: str) -> Any:
        return assigning.plan_assign(obj.machine, host, state, obj.libvirt(),
                                     obj.holdings_or_fail(),
                                     address, vm, live, config, group, managed, mac, vlan, force)
    change(obj, (address,), propose, dry_run)


@click.command()
@click.argument("address", type=ADDRESS)
@click.option("--keep-detached", is_flag=True,
              help="Leave the function (and its group mates) on vfio-pci.")
@timeout_option
@dry_run_option
@click.pass_obj
def release(obj: Context, address: PciAddress, keep_detached: bool, timeout: float,
            dry_run: bool) -> None:
    """Take a function back from every guest that has it, then rebind its host driver."""
    from pcimgr.drivers import planner as drivers
    from pcimgr.guests import assign as assigning
    from pcimgr.plans import records

    def propose(host: Any, _: Any, state_dir: str) -> Any:
        record = records.load(state_dir, assigning.record_path("", str(address)))
        names = tuple(PciAddress.parse(a) for a in (record or {}).get("moved", []))
        return assigning.plan_release(
            obj.machine, host, obj.libvirt(), obj.holdings_or_fail(), address, record,
            drivers.load_records(state_dir, (address, *names)), keep_detached, timeout)
    change(obj, (address,), propose, dry_run)
