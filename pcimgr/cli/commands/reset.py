"""reset: virsh's nodedev-reset, with the guard every change has (docs/user-guide.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import ADDRESS, dry_run_option, force_option
from pcimgr.cli.runner import change
from pcimgr.core.address import PciAddress

if TYPE_CHECKING:
    from pcimgr.core.model import Host
    from pcimgr.host.usage import Survey
    from pcimgr.plans.runner import Proposal


@click.command()
@click.argument("address", type=ADDRESS)
@dry_run_option
@force_option
@click.pass_obj
def reset(obj: Context, address: PciAddress, dry_run: bool, force: bool) -> None:
    """Reset a function (FLR, PM or bus reset, as the kernel chooses): for a device on
    vfio-pci between guests. Refused while a guest holds it, and, without --force, while
    the host uses it, a host driver has it, or the reset would hit another function the
    host uses or a guest holds."""
    from pcimgr.drivers import reset as resets
    from pcimgr.host import topology
    vfio = obj.machine.vfio_holders()

    def held_by(a: PciAddress) -> list[str]:
        from pcimgr.host import discovery
        guests = list(obj.holders(a) or [])
        d = discovery.read_device(obj.sysfs, a)
        if d is not None and d.iommu_group is not None:
            guests += [p for p in vfio.get(d.iommu_group, []) if p not in guests]
        return guests

    def propose(host: Host, survey: Survey, state: str) -> Proposal:
        topo = topology.neighbourhood(obj.sysfs, address)
        return resets.plan_reset(obj.machine, host, survey, topo, address, held_by, force)

    change(obj, (address,), propose, dry_run,
           report=lambda proposal: f"{address}: reset")
