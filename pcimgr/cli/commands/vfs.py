"""SR-IOV virtual functions: the `vfs` command group."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import (
    ADDRESS,
    Digits,
    dry_run_option,
    emit_json,
    force_option,
    json_option,
    mac_option,
    on_off,
    timeout_option,
)
from pcimgr.cli.runner import change, mention_unfinished
from pcimgr.core.address import PciAddress


@click.group()
def vfs() -> None:
    """SR-IOV virtual functions: list, create, destroy, and set MAC/VLAN/trust."""


@vfs.command("list")
@click.argument("pf", required=False, type=ADDRESS)
@json_option
@click.pass_obj
def vfs_list(obj: Context, pf: PciAddress | None, as_json: bool) -> None:
    """SR-IOV capable PFs, their VF counts and each VF: driver, group, MAC, VLAN, holder."""
    from pcimgr.cli import render
    from pcimgr.host import discovery
    from pcimgr.sriov import planner as sriov
    host = discovery.scan_related(obj.sysfs, (pf,)) if pf else obj.host()
    views = sriov.survey(obj.machine, host, pf)
    mention_unfinished(obj)
    from pcimgr.guests import pools as pool_records
    pools = {r.pf: (r.name, r.vfs) for r in pool_records.load_all(obj.config_dir)}
    if as_json:
        emit_json([render.vfs_json(v, obj.namer, obj.holders, pools) for v in views])
        return
    click.echo(render.vfs_text(views, obj.namer, obj.holders, pools))
    if obj.holdings_problem:
        click.echo(obj.holdings_problem, err=True)


def _vfs_report(obj: Context, pf: PciAddress) -> Callable[[Any], str]:
    def report(_: Any) -> str:
        from pcimgr.cli import render
        from pcimgr.host import discovery
        from pcimgr.sriov import planner as sriov
        views = sriov.survey(obj.machine, discovery.scan_related(obj.sysfs, (pf,)), pf)
        return render.vfs_text(views, obj.namer)
    return report


@vfs.command("create")
@click.argument("pf", type=ADDRESS)
@click.argument("count", type=Digits(0, 0xFFFF))
@click.option("--driver", type=click.Choice(["vfio-pci", "host"]), default="vfio-pci",
              show_default=True,
              help="vfio-pci: for guests, no host driver ever touches the VFs; "
                   "host: leave them to the native VF driver (igbvf, iavf, ...).")
@click.option("--pf-up", is_flag=True, help="Bring the PF's interface up first (igb gives VFs "
                                            "of a PF that is down no carrier).")
@timeout_option
@dry_run_option
@force_option
@click.pass_obj
def vfs_create(obj: Context, pf: PciAddress, count: int, driver: str, pf_up: bool,
               timeout: float, dry_run: bool, force: bool) -> None:
    """Create COUNT VFs on PF (an existing other count goes through 0, in one transaction)."""
    from pcimgr.sriov import planner as sriov
    change(obj, (pf,), lambda host, state, _: sriov.plan_create(
        obj.machine, host, state, pf, count, driver, pf_up, timeout, force, obj.holdings()),
        dry_run, _vfs_report(obj, pf))


@vfs.command("destroy")
@click.argument("pf", type=ADDRESS)
@timeout_option
@dry_run_option
@force_option
@click.pass_obj
def vfs_destroy(obj: Context, pf: PciAddress, timeout: float, dry_run: bool,
                force: bool) -> None:
    """Remove all VFs of PF; refused while a guest or process holds one."""
    from pcimgr.sriov import planner as sriov
    change(obj, (pf,), lambda host, state, _: sriov.plan_destroy(
        obj.machine, host, state, pf, timeout, force, obj.holdings()),
        dry_run, _vfs_report(obj, pf))


@vfs.command("set")
@click.argument("pf", type=ADDRESS)
@click.argument("index", type=Digits(0, 0xFFFF))
@mac_option
@click.option("--vlan", type=Digits(0, 4094), help="Port VLAN id, 1-4094; 0 removes it.")
@click.option("--qos", type=Digits(0, 7), help="802.1p priority of --vlan.")
@click.option("--trust", type=click.Choice(["on", "off"]), callback=on_off,
              help="Let the guest change its MAC and use promiscuous mode.")
@click.option("--spoofchk", type=click.Choice(["on", "off"]), callback=on_off,
              help="Drop frames the guest sends with another source MAC.")
@click.option("--state", "link_state", type=click.Choice(["auto", "enable", "disable"]),
              help="The VF's link: follow the PF, always up, or down.")
@timeout_option
@dry_run_option
@click.pass_obj
def vfs_set(obj: Context, pf: PciAddress, index: int, mac: str | None, vlan: int | None,
            qos: int | None, trust: bool | None, spoofchk: bool | None, link_state: str | None,
            timeout: float, dry_run: bool) -> None:
    """Set VF INDEX's MAC, VLAN, trust, spoof check or link state through the PF."""
    from pcimgr.sriov import planner as sriov
    given = {"mac": mac, "vlan": vlan, "qos": qos, "trust": trust, "spoofchk": spoofchk,
             "link_state": link_state}
    settings = {k: v for k, v in given.items() if v is not None}
    change(obj, (pf,), lambda host, _, __: sriov.plan_set(
        obj.machine, host, pf, index, settings, timeout), dry_run, _vfs_report(obj, pf))
