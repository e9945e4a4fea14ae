"""SR-IOV pools: a PF's VFs behind a libvirt hostdev network (docs/pools.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import (
    ADDRESS,
    Digits,
    dry_run_option,
    emit_json,
    force_option,
    json_option,
    on_off,
    timeout_option,
)
from pcimgr.cli.runner import change
from pcimgr.core.address import PciAddress

if TYPE_CHECKING:
    from pcimgr.core.model import Host
    from pcimgr.guests.pools import PoolRecord, PoolView
    from pcimgr.host.usage import Survey
    from pcimgr.plans.runner import Proposal


@click.group()
def pool() -> None:
    """SR-IOV pools: a PF's VFs that libvirt hands to guests as they start."""


@pool.command("define")
@click.argument("name")
@click.option("--pf", "pf", type=ADDRESS, required=True, help="The SR-IOV PF whose VFs it holds.")
@click.option("--vfs", type=Digits(1, 0xFFFF),
              help="How many VFs [default: the PF's current count, else its total].")
@click.option("--vf-driver", type=click.Choice(["vfio-pci", "host"]), default="vfio-pci",
              show_default=True, help="Where the VFs wait for guests.")
@click.option("--vlan", type=Digits(1, 4094), help="VLAN tag every guest's VF gets (1-4094).")
@click.option("--trust", type=click.Choice(["on", "off"]), callback=on_off,
              help="VF trust (a guest may change its MAC, go promiscuous).")
@click.option("--spoofchk", type=click.Choice(["on", "off"]), callback=on_off,
              help="VF spoof checking.")
@timeout_option
@dry_run_option
@force_option
@click.pass_obj
def pool_define(obj: Context, name: str, pf: PciAddress, vfs: int | None, vf_driver: str,
                vlan: int | None, trust: bool | None, spoofchk: bool | None, timeout: float,
                dry_run: bool, force: bool) -> None:
    """Create the PF's VFs (kept across reboots, as `define PF --vfs N`) and a persistent,
    autostarted libvirt network NAME handing them to guests (`assign --pool NAME VM`)."""
    from pcimgr.cli import defining
    from pcimgr.guests import pools
    from pcimgr.host import discovery
    from pcimgr.persist import pools as pool_plans
    lv = obj.libvirt()
    record = pool_plans.check_record(name, str(pf), vfs, vf_driver, vlan, trust, spoofchk,
                                     lv.uri, discovery.scan_related(obj.sysfs, (pf,)))
    if not dry_run:
        defining.needs_root_for_config(obj)

    def propose(host: Host, survey: Survey, state: str) -> Proposal:
        return pool_plans.plan_define(obj.machine, host, survey, lv, obj.holdings_or_fail(),
                                      record, timeout, force)

    def keep() -> None:
        host = discovery.scan_related(obj.sysfs, (pf,))
        if dry_run:
            click.echo(f"Would write {pools.path(obj.config_dir, name)} and define {pf} for "
                       f"boot: {pool_plans.definition(host, record).describe()}")
            return
        defining.write(obj, [pool_plans.definition(host, record)],  # one change, both files
                       also=[(pools.path(obj.config_dir, name), pools.text(record))])
        click.echo(f"Pool {name}: {record.vfs} VF(s) of {pf} for guests "
                   f"(`pcimgr assign --pool {name} VM`)")
    change(obj, (pf,), propose, dry_run, report=lambda p: f"{len(p.plan.steps)} step(s) done",
           then=keep)


@pool.command("undefine")
@click.argument("name")
@dry_run_option
@click.pass_obj
def pool_undefine(obj: Context, name: str, dry_run: bool) -> None:
    """Remove the pool's libvirt network and its definition; refused while a guest has an
    interface from it. The VFs stay until `pcimgr vfs destroy PF`."""
    from pcimgr.cli import defining
    from pcimgr.guests import pools
    from pcimgr.persist import definitions
    from pcimgr.persist import pools as pool_plans
    record = pools.require(obj.config_dir, name)
    lv = obj.libvirt()
    pf = PciAddress.parse(record.pf)
    if not dry_run:
        defining.needs_root_for_config(obj)

    def propose(host: Host, survey: Survey, state: str) -> Proposal:
        return pool_plans.plan_undefine(lv, _view(obj, record))

    def forget() -> None:
        if dry_run:
            click.echo(f"Would remove {pools.path(obj.config_dir, name)} and the definition of "
                       f"{record.pf}")
            return
        definitions.remove(obj.config_dir, record.pf,  # one change, both files
                           also=[(pools.path(obj.config_dir, name), None)])
        click.echo(f"Pool {name} removed; the VFs of {record.pf} stay until `pcimgr vfs "
                   f"destroy {record.pf}`")
    change(obj, (pf,), propose, dry_run, report=lambda p: f"network {name} removed",
           then=forget)


@pool.command("list")
@json_option
@click.pass_obj
def pool_list(obj: Context, as_json: bool) -> None:
    """Each pool: its PF, VFs, which domain holds which VF, and how many are free."""
    from pcimgr.cli import render
    from pcimgr.guests import pools
    records = pools.load_all(obj.config_dir)
    views = [_view(obj, r) for r in records] if records else []
    if as_json:
        emit_json([_json(v) for v in views])
        return
    if not views:
        click.echo("No pools (`pcimgr pool define NAME --pf ADDR` makes one).")
        return
    rows = []
    for v in views:
        state = ("active" if v.active else "inactive" if v.defined else "no network") + (
            ", autostart" if v.autostart else "")
        rows.append([v.record.name, v.record.pf, f"{len(v.vfs)}", f"{v.free}",
                     str(v.record.vlan or "-"), state, ", ".join(v.users) or "-"])
        for vf in v.vfs:
            rows.append(["", f"  {vf}", "", "", "", "", v.holders.get(str(vf), "")])
    click.echo(render.table(rows, ["POOL", "PF / VF", "VFS", "FREE", "VLAN", "NETWORK",
                                   "GUESTS"]))


def _view(obj: Context, record: PoolRecord) -> PoolView:
    from pcimgr.guests import pools
    lv = obj.libvirt()
    return pools.view(lv, obj.holdings_or_fail(), lv.domains(), record, obj.sysfs)


def _json(v: PoolView) -> dict[str, Any]:
    return {"name": v.record.name, "pf": v.record.pf, "vf_driver": v.record.vf_driver,
            "vlan": v.record.vlan, "trust": v.record.trust, "spoofchk": v.record.spoofchk,
            "uri": v.record.uri, "network": {"defined": v.defined, "active": v.active,
                                             "autostart": v.autostart},
            "vfs": [{"address": str(vf), "holder": v.holders.get(str(vf))} for vf in v.vfs],
            "guests": list(v.users), "free": v.free}
