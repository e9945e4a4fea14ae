"""NVIDIA's vendor vGPU interface on SR-IOV VFs: the `vgpu` command group (docs/mdev.md)."""

from __future__ import annotations

from typing import Any

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import ADDRESS, dry_run_option, emit_json, json_option
from pcimgr.cli.runner import change_plan
from pcimgr.core.address import PciAddress


@click.group()
def vgpu() -> None:
    """vGPU types on the VFs of NVIDIA GPUs with the vendor VFIO interface (vGPU 17+)."""


@vgpu.command("list")
@json_option
@click.pass_obj
def vgpu_list(obj: Context, as_json: bool) -> None:
    """Every VF with the interface: its vGPU type, what it can take now, its guests."""
    from pcimgr.cli import mdev_render
    from pcimgr.host import vgpus
    host = obj.host()
    found = [v for v in (vgpus.read(obj.sysfs, str(d.address)) for d in host.devices
                         if d.physfn is not None) if v is not None]
    holdings = obj.holdings()
    guests = None if holdings is None else {
        v.vf: sorted({h.domain for h in holdings.get(PciAddress.parse(v.vf), [])})
        for v in found}
    if as_json:
        emit_json([mdev_render.vgpu_json(v, guests) for v in found])
    elif found:
        click.echo(mdev_render.vgpus_text(found, guests))
    else:
        click.echo("No VF has the vendor vGPU interface (nvidia/current_vgpu_type).", err=True)
    if obj.holdings_problem:
        click.echo(obj.holdings_problem, err=True)


@vgpu.command("set")
@click.argument("vf", type=ADDRESS)
@click.argument("wanted", metavar="TYPE|none")
@dry_run_option
@click.pass_obj
def vgpu_set(obj: Context, vf: PciAddress, wanted: str, dry_run: bool) -> None:
    """Give VF a vGPU type (its ID or name) from what it can take now, or clear it (none);
    refused while a guest or process has a VF whose type would change."""
    from pcimgr.cli import mdev_render
    from pcimgr.guests.holdings import names
    from pcimgr.host import discovery
    from pcimgr.mdev import vgpu as vgpus

    def propose() -> Any:
        host = discovery.scan_related(obj.sysfs, (vf,))
        group = host.require(vf).iommu_group
        holders = obj.machine.vfio_holders().get(group, []) if group is not None else []
        # the guests that have the VF: from libvirt where this machine asks it
        assigned = (names(obj.holdings_or_fail(), vf) or []) if obj.asked_uri else []
        return vgpus.plan_set(obj.machine, vf, wanted, assigned, holders)

    def report(_: Any) -> str:
        return mdev_render.vgpus_text(vgpus.siblings(obj.sysfs, vf), None)
    change_plan(obj, propose, dry_run, report)
