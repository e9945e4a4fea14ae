"""Guests: assign and release through libvirt."""

from __future__ import annotations

from typing import Any

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import (
    ADDRESS_OR_DOMAIN,
    DOMAIN,
    dry_run_option,
    force_option,
    mac_option,
    timeout_option,
    vlan_option,
)
from pcimgr.cli.runner import change, change_plan
from pcimgr.core.address import PciAddress
from pcimgr.core.mdev import is_uuid, parse_uuid


def _steps_then(last: str) -> Any:
    return lambda p: "\n".join([*(s.summary() for s in p.plan.steps), last])


def _mdev_holders(obj: Context) -> dict[str, list[str]]:
    """For a change: every domain's mdevs, or the error that kept libvirt from saying."""
    from pcimgr.core.mdev import holders_of
    return holders_of([(d.name, d.live_xml, d.config_xml) for d in obj.libvirt().domains()])


@click.command()
@click.argument("first", metavar="[ADDRESS] VM", type=ADDRESS_OR_DOMAIN)
@click.argument("second", required=False, type=DOMAIN, metavar="")
@click.option("--pool", "pool_name", metavar="NAME",
              help="A VF from this pool (no ADDRESS): <interface type='network'>.")
@click.option("--failover", is_flag=True,
              help="Team the VF with a virtio interface of the same MAC (the guest keeps its "
                   "network while the VF is unplugged for a migration); with --bridge or "
                   "--network.")
@click.option("--bridge", metavar="BR", help="--failover: the virtio member's host bridge.")
@click.option("--network", "network", metavar="NET",
              help="--failover: the virtio member's libvirt network.")
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
def assign(obj: Context, first: str, second: str | None, pool_name: str | None,
           failover: bool, bridge: str | None, network: str | None, live: bool | None,
           config: bool | None, group: bool, managed: bool, mac: str | None, vlan: int | None,
           dry_run: bool, force: bool) -> None:
    """Give a function to guest VM: detach it to vfio-pci, then attach it through libvirt.

    An SR-IOV VF of a NIC with --mac/--vlan goes in as <interface type='hostdev'>; with
    --pool NAME (and no ADDRESS) the guest gets a free VF of that pool as it starts;
    --failover pairs the VF with a virtio interface for live migration.
    """
    from pcimgr.guests import assign as assigning
    from pcimgr.guests import pools
    if (pool_name is None) == (second is None):
        raise click.UsageError("give ADDRESS VM, or --pool NAME VM")
    if (bridge or network) and not failover:
        raise click.UsageError("--bridge and --network go with --failover")
    lv = obj.libvirt()
    teaming = pools.failover(obj.sysfs, lv, bridge, network) if failover else None
    if pool_name is not None:
        record = pools.require(obj.config_dir, pool_name)
        vm = first

        def propose_pool(host: Any, survey: Any, state: str) -> Any:
            view = pools.view(lv, obj.holdings_or_fail(), lv.domains(), record, obj.sysfs)
            return pools.plan_assign(lv, view, vm, mac, vlan, live, config, teaming)
        change(obj, (PciAddress.parse(record.pf),), propose_pool, dry_run,
               report=lambda p: "\n".join(s.summary() for s in p.plan.steps))
        return
    assert second is not None
    if is_uuid(first):  # an mdev: no host function moves
        if group or managed or mac or vlan or failover:
            raise click.UsageError("an mdev goes to a guest as it is: --group, --managed, "
                                   "--mac, --vlan and --failover are for PCI functions")
        from pcimgr.guests import mdev_assign
        uuid = parse_uuid(first)
        change_plan(obj, lambda: mdev_assign.plan_assign(
            obj.machine, lv, _mdev_holders(obj), uuid, second, live, config), dry_run,
            _steps_then(f"mdev {uuid} is {second}'s"))
        return
    address = PciAddress.parse(first)

    def propose(host: Any, state: Any, _: str) -> Any:
        return assigning.plan_assign(obj.machine, host, state, lv, obj.holdings_or_fail(),
                                     address, second, live, config, group, managed, mac, vlan,
                                     force, teaming)
    change(obj, (address,), propose, dry_run)


@click.command()
@click.argument("target", metavar="ADDRESS | --pool NAME VM", type=ADDRESS_OR_DOMAIN)
@click.option("--pool", "pool_name", metavar="NAME",
              help="Take this pool's interfaces (and their virtio partners) out of VM.")
@click.option("--keep-detached", is_flag=True,
              help="Leave the function (and its group mates) on vfio-pci.")
@timeout_option
@dry_run_option
@click.pass_obj
def release(obj: Context, target: str, pool_name: str | None, keep_detached: bool,
            timeout: float, dry_run: bool) -> None:
    """Take a function back from every guest that has it, then rebind its host driver; or,
    with --pool NAME VM, take the pool's interfaces out of VM."""
    from pcimgr.drivers import planner as drivers
    from pcimgr.guests import assign as assigning
    from pcimgr.guests import pools
    from pcimgr.plans import records
    if pool_name is not None:
        record = pools.require(obj.config_dir, pool_name)
        lv = obj.libvirt()
        change(obj, (PciAddress.parse(record.pf),),
               lambda host, survey, state: pools.plan_release(lv, record, target, timeout),
               dry_run, report=lambda p: "\n".join(s.summary() for s in p.plan.steps))
        return
    if is_uuid(target):
        from pcimgr.guests import mdev_assign
        uuid = parse_uuid(target)
        lv = obj.libvirt()
        change_plan(obj, lambda: mdev_assign.plan_release(lv, lv.domains(), uuid, timeout),
                    dry_run, _steps_then(f"the mdev stays: `pcimgr mdev remove {uuid}` "
                                         "removes it"))
        return
    address = PciAddress.parse(target)

    def propose(host: Any, _: Any, state_dir: str) -> Any:
        record = records.load(state_dir, assigning.record_path("", str(address)))
        names = tuple(PciAddress.parse(a) for a in (record or {}).get("moved", []))
        return assigning.plan_release(
            obj.machine, host, obj.libvirt(), obj.holdings_or_fail(), address, record,
            drivers.load_records(state_dir, (address, *names)), keep_detached, timeout)
    change(obj, (address,), propose, dry_run)


@click.command("migrate-prep")
@click.argument("vm", type=DOMAIN)
@timeout_option
@dry_run_option
@click.pass_obj
def migrate_prep(obj: Context, vm: str, timeout: float, dry_run: bool) -> None:
    """Before a live migration: unplug the running guest's failover VFs (live only; it keeps
    its network on the virtio member, and its configuration still names them)."""
    from pcimgr.guests import pools
    lv = obj.libvirt()
    records = {r.name: r for r in pools.load_all(obj.config_dir)}
    # the steps change libvirt only: no host functions to read for the plan
    change(obj, (), lambda host, survey, state: pools.plan_migrate_prep(lv, records, vm, timeout),
           dry_run, report=lambda p: "\n".join(s.summary() for s in p.plan.steps)
           + f"\n{vm} can migrate now; on the destination: `pcimgr migrate-finish {vm}`")


@click.command("migrate-finish")
@click.argument("vm", type=DOMAIN)
@dry_run_option
@click.pass_obj
def migrate_finish(obj: Context, vm: str, dry_run: bool) -> None:
    """After a live migration, on the destination: plug VFs back into the guest's failover
    pairs, from the same-named pools here, with the same MAC and VLAN."""
    from pcimgr.guests import pools
    lv = obj.libvirt()

    def propose(host: Any, survey: Any, state: str) -> Any:
        views = {r.name: pools.view(lv, obj.holdings_or_fail(), lv.domains(), r, obj.sysfs)
                 for r in pools.load_all(obj.config_dir)}
        return pools.plan_migrate_finish(lv, views, vm)
    change(obj, (), propose, dry_run,
           report=lambda p: "\n".join(s.summary() for s in p.plan.steps))
