"""Host-driver control: detach, rebind, bind, unbind."""

from __future__ import annotations

from collections.abc import Callable

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import ADDRESS, DRIVER, dry_run_option, flat_addresses, force_option
from pcimgr.cli.runner import change
from pcimgr.core.address import PciAddress

owner_option = click.option(
    "--owner", metavar="USER[:GROUP]",
    help="Give the functions' VFIO device nodes (/dev/vfio/N, /dev/vfio/devices/vfioN) to "
         "USER (and GROUP, mode 0660): DPDK, rootless QEMU, containers. Gone with the "
         "driver; with --save (or `define --owner`) at every boot too.")
save_option = click.option(
    "--save", is_flag=True,
    help="Also define it for every boot, as `pcimgr define ADDR --driver DRIVER` (checked "
         "first: a definition that would be refused stops the change too).")


def _saving(obj: Context, addresses: tuple[PciAddress, ...], driver: str | None, group: bool,
            save: bool, dry_run: bool, owner: str | None = None) -> Callable[[], None] | None:
    if not save:
        return None
    from pcimgr.cli import defining
    return defining.saving(obj, addresses, driver or _one_driver(obj, addresses), group,
                           dry_run, owner)


def _one_driver(obj: Context, addresses: tuple[PciAddress, ...]) -> str:
    """detach --save without --driver: the driver each function ends on (the one it is
    ready through, or the one detach binds), when that is one for all of them."""
    from pcimgr.core.errors import BadInput
    from pcimgr.core.readiness import readiness
    from pcimgr.drivers import planner as drivers
    from pcimgr.host import discovery
    host = discovery.scan_related(obj.sysfs, addresses)
    devices = [host.require(a) for a in addresses]
    chosen = drivers.targets_of(obj.machine, devices, None)
    ends = {readiness(d).driver or chosen[d.address] for d in devices}
    if len(ends) != 1:
        raise BadInput(f"these functions end on different drivers ({', '.join(sorted(ends))});"
                       " with --save, detach them one driver at a time (`--driver NAME`)")
    return ends.pop()


@click.command()
@click.argument("addresses", nargs=-1, required=True, type=ADDRESS, metavar="ADDR...",
                callback=flat_addresses)
@click.option("--driver", type=DRIVER,
              help="The driver to bind (default: the most specific VFIO variant the kernel "
                   "has for each function, as libvirt chooses, else vfio-pci; or pci-stub).")
@click.option("--group", is_flag=True,
              help="Also detach the other functions of the IOMMU groups (all or none).")
@owner_option
@save_option
@dry_run_option
@force_option
@click.pass_obj
def detach(obj: Context, addresses: tuple[PciAddress, ...], driver: str | None, group: bool,
           owner: str | None, save: bool, dry_run: bool, force: bool) -> None:
    """Take functions from their host drivers and make them ready for a guest: bind each to
    its VFIO variant driver (mlx5_vfio_pci, ...) or vfio-pci, as one transaction; one that
    is ready already stays. With --save, at every boot too."""
    from pcimgr.drivers import planner as drivers
    if driver is not None:
        drivers.check_driver_name(driver)
    then = _saving(obj, addresses, driver, group, save, dry_run, owner)
    change(obj, addresses, lambda host, state, _: drivers.plan_detach(
        obj.machine, host, state, addresses, driver, group, force, owner), dry_run, then=then)


@click.command()
@click.argument("addresses", nargs=-1, required=True, type=ADDRESS, metavar="ADDR...",
                callback=flat_addresses)
@click.option("--save", is_flag=True,
              help="Also forget their definitions (what `detach --save` wrote), so that the "
                   "next boot does not take them again: one command undoes the other.")
@dry_run_option
@click.pass_obj
def rebind(obj: Context, addresses: tuple[PciAddress, ...], save: bool, dry_run: bool) -> None:
    """Give functions back to the driver they had before pcimgr moved them; with --save,
    for every boot too."""
    from pcimgr.drivers import planner as drivers
    change(obj, addresses, lambda host, _, state_dir: drivers.plan_rebind(
        obj.machine, host, addresses, drivers.load_records(state_dir, addresses)), dry_run,
           then=lambda: _defined_after_rebind(obj, addresses, save, dry_run))


def _defined_after_rebind(obj: Context, addresses: tuple[PciAddress, ...], save: bool,
                          dry_run: bool) -> None:
    """--save: their definitions go (under the change's lock); without it, a definition
    that would take a function again at the next boot is said, not kept silently."""
    from pcimgr.persist import definitions
    cfg = obj.config_dir
    defined = [str(a) for a in addresses if definitions.load(cfg, str(a)) is not None]
    if not defined:
        return
    if not save:
        click.echo(f"pcimgr: {', '.join(defined)} still defined: `pcimgr apply` and the next "
                   "boot take them again (`pcimgr rebind --save` or `pcimgr undefine` forgets "
                   "that)", err=True)
        return
    if dry_run:
        for a in defined:
            click.echo(f"Would remove {definitions.path(cfg, a)} and its udev env file")
        return
    definitions.remove_all(cfg, defined)
    for a in defined:
        click.echo(f"Undefined {a}: the next boot leaves it on its host driver")


@click.command()
@click.argument("addresses", nargs=-1, required=True, type=ADDRESS, metavar="ADDR...",
                callback=flat_addresses)
@click.argument("driver", type=DRIVER)
@save_option
@dry_run_option
@force_option
@click.pass_obj
def bind(obj: Context, addresses: tuple[PciAddress, ...], driver: str, save: bool,
         dry_run: bool, force: bool) -> None:
    """Bind functions to DRIVER (driver_override + unbind + drivers_probe), as one
    transaction; with --save, at every boot too."""
    from pcimgr.drivers import planner as drivers
    drivers.check_driver_name(driver)
    then = _saving(obj, addresses, driver, False, save, dry_run)
    change(obj, addresses, lambda host, state, _: drivers.plan_bind(
        obj.machine, host, state, addresses, driver, force), dry_run, then=then)


@click.command()
@click.argument("addresses", nargs=-1, required=True, type=ADDRESS, metavar="ADDR...",
                callback=flat_addresses)
@dry_run_option
@force_option
@click.pass_obj
def unbind(obj: Context, addresses: tuple[PciAddress, ...], dry_run: bool, force: bool) -> None:
    """Leave functions without a driver, as one transaction."""
    from pcimgr.drivers import planner as drivers
    change(obj, addresses, lambda host, state, _: drivers.plan_unbind(
        obj.machine, host, state, addresses, force), dry_run)
