"""The definitions `define` writes, checked as the change itself would be, shared by
`define` and the `--save` of `detach` and `bind` (driverctl's "now and at boot")."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pcimgr.cli.context import Context
from pcimgr.core.address import PciAddress

if TYPE_CHECKING:
    from pcimgr.core.model import Host
    from pcimgr.persist.definitions import Definition


def needs_root_for_config(obj: Context) -> None:
    from pcimgr.core.errors import NeedsRoot
    if obj.machine.needs_root and os.geteuid() != 0 and not os.access(
            os.path.dirname(obj.config_dir.rstrip("/")) or "/", os.W_OK):
        raise NeedsRoot(f"definitions live in {obj.config_dir} and need root to change; run "
                        "it with sudo (or give --config-dir)")


def checked(obj: Context, host: Host, addresses: tuple[PciAddress, ...], driver: str | None,
            group: bool, timeout: float, vfs: int | None = None, vf_driver: str | None = None,
            vf_index: int | None = None, settings: dict[str, Any] | None = None,
            owner: str | None = None) -> list[Definition]:
    """The definitions of the functions (with --group and a driver, of the rest of their
    IOMMU groups too), after the checks the change itself would run now: Refused, BadInput
    or NotFound before anything is written."""
    from pcimgr.host import usage
    from pcimgr.persist import definitions
    from pcimgr.persist import planner as persist
    cfg = obj.config_dir
    existing = {e.address: e for e in definitions.load_all(cfg)[0]}
    new: dict[str, Definition] = {}
    for address in addresses:
        d = persist.define(host, definitions.load(cfg, str(address)), address, driver, vfs,
                           vf_driver, vf_index, settings or {}, owner)
        for each in persist.with_group(host, d, existing) if group and driver else [d]:
            new.setdefault(each.address, each)
    persist.check(obj.machine, host, usage.survey(obj.machine), list(new.values()), existing,
                  timeout)
    return list(new.values())


def would_define(obj: Context, found: list[Definition]) -> None:
    """What a dry run says instead of writing."""
    from pcimgr.persist import definitions
    cfg = obj.config_dir
    for each in found:
        click.echo(f"Would define {each.address} ({each.ids}, IOMMU group "
                   f"{each.iommu_group}): {each.describe()}: write "
                   f"{definitions.path(cfg, each.address)} and "
                   f"{os.path.join(cfg, 'udev', definitions.env_name(each))}")


def write(obj: Context, found: list[Definition],
          also: list[tuple[str, str | None]] | None = None) -> None:
    """Write them (and ALSO, in the same change); the caller holds the host's lock."""
    from pcimgr.persist import definitions
    definitions.save_all(obj.config_dir, found, also)
    for each in found:
        click.echo(f"Defined {each.address} ({each.ids}, IOMMU group {each.iommu_group}): "
                   f"{each.describe()}")


def saving(obj: Context, addresses: tuple[PciAddress, ...], driver: str, group: bool,
           dry_run: bool, owner: str | None = None) -> Callable[[], None]:
    """`detach/bind --save`: the definitions `define ADDR --driver DRIVER [--group]` would
    write, checked before the change (a definition refused stops it before any write).
    Returns what runs after the change, under its lock (or after its dry-run plan): they
    are computed now, while the group mates are still on their host drivers."""
    from pcimgr.host import discovery
    host = discovery.scan_related(obj.sysfs, addresses)
    found = checked(obj, host, addresses, driver, group, SAVE_TIMEOUT, owner=owner)
    if dry_run:
        def show() -> None:
            would_define(obj, found)
        return show
    needs_root_for_config(obj)
    obj.machine.check_writable()

    def save() -> None:
        write(obj, found)  # run_locked swept the configuration and finished a killed change
        click.echo("At boot the udev rules make it so again (`pcimgr install-udev` once).")
    return save


# Only a VF-count definition waits on the kernel in its checks; a driver's never does.
SAVE_TIMEOUT = 30.0
