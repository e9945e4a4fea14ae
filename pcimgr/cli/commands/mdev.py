"""Mediated devices: the `mdev` command group (docs/mdev.md)."""

from __future__ import annotations

from typing import Any

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import dry_run_option, emit_json, json_option
from pcimgr.cli.runner import change_plan, mention_unfinished, run_locked_config
from pcimgr.core.terminal import safe


def _uuid(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from pcimgr.core.mdev import parse_uuid
    return None if value is None else parse_uuid(value)


def _name(what: str) -> Any:
    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        from pcimgr.core.mdev import check_name
        if value is None:
            return None
        # a PCI parent as the kernel names it (0000:00:02.0), whichever form was typed
        return check_name(_pci(value) or value if what == "parent" else value, what)
    return check


def _attrs(ctx: click.Context, param: click.Parameter,
           value: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    from pcimgr.core.errors import BadInput
    from pcimgr.core.mdev import check_attr
    pairs = []
    for item in value:
        name, eq, text = item.partition("=")
        if not eq:
            raise BadInput(f"--attr {item!r} is not NAME=VALUE (e.g. --attr assign_adapter=5)")
        pairs.append(check_attr(name, text))
    return tuple(pairs)


uuid_argument = click.argument("uuid", callback=_uuid)
parent_argument = click.argument("parent", callback=_name("parent"))
type_argument = click.argument("type_id", metavar="TYPE", callback=_name("mdev type"))
attr_option = click.option("--attr", "attrs", multiple=True, callback=_attrs,
                           metavar="NAME=VALUE",
                           help="An attribute written to the mdev after it is created "
                                "(repeatable, in order; vfio-ap's assign_adapter, ...).")


def _pci(name: str) -> str:
    """A parent named like a PCI function, as the kernel names it; "" otherwise."""
    from pcimgr.core.address import PciAddress
    from pcimgr.core.errors import BadInput
    try:
        return str(PciAddress.parse(name))
    except BadInput:
        return ""


@click.group()
def mdev() -> None:
    """Mediated devices: types, create, remove, and definitions shared with mdevctl."""


@mdev.command("types")
@click.argument("parent", required=False, callback=_name("parent"))
@json_option
@click.pass_obj
def mdev_types(obj: Context, parent: str | None, as_json: bool) -> None:
    """The mdev parents and the types each offers: name, API, instances left."""
    from pcimgr.cli import mdev_render
    from pcimgr.host import mdevs, vgpus
    vendor = vgpus.read(obj.sysfs, _pci(parent)) if parent and not mdevs.read_parent(
        obj.sysfs, parent) and _pci(parent) else None
    if vendor is not None:  # a VF of NVIDIA's vendor interface: its creatable types
        if as_json:
            emit_json([mdev_render.vgpu_json(vendor, None)])
        else:
            click.echo(mdev_render.vendor_types_text(vendor))
        return
    found = [mdevs.require_parent(obj.sysfs, parent)] if parent else mdevs.parents(obj.sysfs)
    if as_json:
        emit_json([mdev_render.parent_json(p) for p in found])
        return
    if not found:
        click.echo("No mdev parents: no driver has registered a device with the mdev core "
                   "(kvmgt for GVT-g, nvidia-vgpu-vfio, mtty, vfio_ccw, vfio_ap).", err=True)
        return
    click.echo(mdev_render.types_text(found, mdev_render.parent_names(obj.sysfs, found,
                                                                       obj.namer)))


@mdev.command("list")
@click.option("--defined", is_flag=True, help="The definitions in /etc/mdevctl.d, with "
                                              "whether each is running as defined.")
@json_option
@click.pass_obj
def mdev_list(obj: Context, defined: bool, as_json: bool) -> None:
    """The live mdevs: parent, type, IOMMU group, driver, guest and process holding them."""
    from pcimgr.cli import mdev_render
    from pcimgr.host import mdevs
    mention_unfinished(obj)
    live = mdevs.mdevs(obj.sysfs)
    if defined:
        from pcimgr.mdev import definitions
        found = definitions.load_all(obj.machine)
        for problem in found.problems:
            click.echo(safe(f"pcimgr: warning: {problem}"), err=True)
        rows = mdev_render.defined_rows(found.definitions, live, obj.sysfs)
        if as_json:
            emit_json(rows)
        else:
            click.echo(mdev_render.defined_text(rows) if rows else "No mdev definitions.")
        return
    guests = obj.mdev_holders()
    holders = obj.machine.vfio_holders() if live else {}
    if as_json:
        emit_json([mdev_render.mdev_json(m, guests, holders) for m in live])
    elif live:
        click.echo(mdev_render.mdevs_text(live, guests, holders))
    else:
        click.echo("No mdevs.")
    if obj.holdings_problem:
        click.echo(obj.holdings_problem, err=True)


def _live_report(obj: Context) -> str:
    from pcimgr.cli import mdev_render
    from pcimgr.host import mdevs
    live = mdevs.mdevs(obj.sysfs)
    return mdev_render.mdevs_text(live, None, obj.machine.vfio_holders()) if live else "No mdevs."


@mdev.command("create")
@parent_argument
@type_argument
@click.option("--uuid", callback=_uuid, help="The mdev's UUID (default: a new random one).")
@attr_option
@dry_run_option
@click.pass_obj
def mdev_create(obj: Context, parent: str, type_id: str, uuid: str | None,
                attrs: tuple[tuple[str, str], ...], dry_run: bool) -> None:
    """Create an mdev of TYPE on PARENT, if it has an instance left (not kept across reboots:
    `mdev define` is)."""
    import uuid as uuids

    from pcimgr.mdev import planner
    chosen = uuid or str(uuids.uuid4())  # one UUID for the check, the plan and the act
    change_plan(obj, lambda: planner.plan_create(obj.machine, parent, type_id, chosen, attrs),
                dry_run, lambda _: _live_report(obj))


@mdev.command("remove")
@uuid_argument
@dry_run_option
@click.pass_obj
def mdev_remove(obj: Context, uuid: str, dry_run: bool) -> None:
    """Remove a live mdev; refused while a guest's XML names it or a process holds its group.
    Its definition, if any, stays (`mdev undefine`)."""
    from pcimgr.core.mdev import holders_of
    from pcimgr.mdev import planner

    def propose() -> Any:
        guests: dict[str, list[str]] | None
        if obj.connect:  # a libvirt named with --connect: its failure stops the remove
            guests = holders_of([(d.name, d.live_xml, d.config_xml)
                                 for d in obj.libvirt().domains()])
        else:  # the default one, as `vfs destroy`: without a daemon no guest runs there
            guests = obj.mdev_holders()
            if guests is None and obj.holdings_problem:
                click.echo(safe(obj.holdings_problem), err=True)
        return planner.plan_remove(obj.machine, uuid, guests)
    change_plan(obj, propose, dry_run, lambda _: _live_report(obj))


@mdev.command("start")
@uuid_argument
@dry_run_option
@click.pass_obj
def mdev_start(obj: Context, uuid: str, dry_run: bool) -> None:
    """Create the mdev a definition describes, with its attributes."""
    from pcimgr.core.errors import NotFound
    from pcimgr.mdev import definitions, planner

    def propose() -> Any:
        found = definitions.find(obj.machine, uuid)
        if found is None:
            raise NotFound(f"no mdev definition {uuid} in {definitions.top(obj.machine)}; "
                           "`pcimgr mdev list --defined` shows them")
        return planner.plan_start(obj.machine, [found], f"mdev start {uuid}")
    change_plan(obj, propose, dry_run, lambda _: _live_report(obj))


@mdev.command("start-parent")
@parent_argument
@dry_run_option
@click.pass_obj
def mdev_start_parent(obj: Context, parent: str, dry_run: bool) -> None:
    """Start PARENT's auto definitions (what the udev rule runs when a parent registers)."""
    from pcimgr.mdev import definitions, planner

    def propose() -> Any:
        found = definitions.load_all(obj.machine)
        for problem in found.problems:
            click.echo(safe(f"pcimgr: warning: {problem}"), err=True)
        auto = [d for d in found.definitions if d.parent == parent and d.start == "auto"]
        # each on its own, as mdevctl starts them: one stale definition stops no other
        return planner.plan_start(obj.machine, auto, f"mdev start-parent {parent}",
                                  skip_failing=True)
    change_plan(obj, propose, dry_run, lambda _: _live_report(obj))


@mdev.command("define")
@click.argument("parent", required=False, callback=_name("parent"))
@click.argument("type_id", metavar="[TYPE]", required=False, callback=_name("mdev type"))
@click.option("--uuid", callback=_uuid, help="The UUID: a running mdev's (its parent and type "
                                             "are taken from it), or a new one's.")
@click.option("--auto", is_flag=True, help="Start it whenever its parent appears (at boot).")
@attr_option
@dry_run_option
@click.pass_obj
def mdev_define(obj: Context, parent: str | None, type_id: str | None, uuid: str | None,
                auto: bool, attrs: tuple[tuple[str, str], ...], dry_run: bool) -> None:
    """Keep an mdev across reboots: /etc/mdevctl.d/PARENT/UUID, as mdevctl writes it."""
    import json
    import uuid as uuids

    from pcimgr.mdev import definitions, planner
    chosen = uuid or str(uuids.uuid4())

    def make() -> Any:
        return planner.new_definition(obj.machine, chosen, parent, type_id, auto, attrs)
    made = make()
    target = definitions.path(obj.machine, made.parent, made.uuid)
    if dry_run:
        click.echo(f"Would write {target}:")
        click.echo(json.dumps(made.to_json(), indent=2))
        return

    def work() -> None:
        definitions.sweep(obj.machine)
        definition = make()
        definitions.write(obj.machine, definition)
        click.echo(f"Defined mdev {definition.uuid} ({definition.parent} "
                   f"{definition.type_id}, start {definition.start}) in {target}")
    run_locked_config(obj, work, make)


@mdev.command("undefine")
@uuid_argument
@dry_run_option
@click.pass_obj
def mdev_undefine(obj: Context, uuid: str, dry_run: bool) -> None:
    """Forget a definition; a running mdev stays (`mdev remove` removes it)."""
    from pcimgr.core.errors import NotFound
    from pcimgr.mdev import definitions

    def find() -> Any:
        found = definitions.find(obj.machine, uuid)
        if found is None:
            raise NotFound(f"no mdev definition {uuid} in {definitions.top(obj.machine)}; "
                           "`pcimgr mdev list --defined` shows them")
        return found
    found = find()
    target = definitions.path(obj.machine, found.parent, found.uuid)
    if dry_run:
        click.echo(f"Would remove {target}")
        return

    def work() -> None:
        definitions.sweep(obj.machine)
        definitions.remove(obj.machine, find())
        click.echo(f"Removed {target}")
    run_locked_config(obj, work, find)
