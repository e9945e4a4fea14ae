"""Options and arguments the commands share, each with its one rule (a duration, a count,
a VLAN, an address, a MAC), and JSON output."""

from __future__ import annotations

import json
import math
import sys
from typing import TYPE_CHECKING, Any

import click

from pcimgr.core.address import PciAddress

if TYPE_CHECKING:  # Tab completion only: not imported by every run
    from click.shell_completion import CompletionItem


class Seconds(click.FloatRange):
    """A duration: a finite number within the range (nan passes every comparison, inf
    would wait forever)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not math.isfinite(_float_or(value)):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return super().convert(value, param, ctx)


def _float_or(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0  # click's own message says it is not a number


class Digits(click.IntRange):
    """A count, index or VLAN id: ASCII digits 0-9 only (int() also takes '٣' and ' 3_0'),
    within the one range the field has in every command."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            self.fail(f"{value!r} is not a number written with the digits 0-9", param, ctx)
        return super().convert(value, param, ctx)


class Address(click.ParamType):
    """A PCI function as people write it (`04:00.0`, `0000:04:00.0`, `pci_0000_04_00_0`);
    Tab offers the functions the host has."""

    name = "address"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        # BadInput itself, not click's "Invalid value": one line naming the accepted forms
        return value if isinstance(value, PciAddress) else PciAddress.parse(value)

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        from pcimgr.cli import complete
        found = complete.addresses(ctx, incomplete)
        if not found and param.nargs == -1:
            # `bind ADDR... DRIVER`: click gives every word to the open-ended list, so a word
            # that is no address is completed as the argument after it
            later = ctx.command.params[ctx.command.params.index(param) + 1:]
            for other in later:
                if isinstance(other, click.Argument):
                    return other.type.shell_complete(ctx, other, incomplete)
        return complete.items(found)


class Named(click.ParamType):
    """A free-form name (a driver, a libvirt domain) whose Tab completion asks the host."""

    name = "name"

    def __init__(self, what: str) -> None:
        self.what = what

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        from pcimgr.cli import complete
        return complete.items(complete.NAMES[self.what](ctx, incomplete))


class AddressOrDomain(click.ParamType):
    """A function or, where the command says so (`--pool NAME VM`), a libvirt domain: the
    word as typed; Tab offers both."""

    name = "address-or-domain"

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        from pcimgr.cli import complete
        return complete.items(complete.addresses(ctx, incomplete)
                              + complete.domains(ctx, incomplete))


ADDRESS = Address()
ADDRESS_OR_DOMAIN = AddressOrDomain()
DRIVER = Named("driver")
DOMAIN = Named("domain")
PROFILE = Named("profile")


def terminal_columns() -> int | None:
    """The terminal's width when stdout is one (COLUMNS wins, as shutil reads it); None on a
    pipe, whose output stays as it always was."""
    if not sys.stdout.isatty():
        return None
    import shutil
    return shutil.get_terminal_size().columns


def emit_json(data: Any) -> None:
    # Indented for a person at a terminal; compact for pipes, where json's C
    # encoder (indent=None only) is ten times faster on thousands of functions.
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/json.md).")


def mac_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from pcimgr.host import vfinfo
    return None if value is None else vfinfo.check_mac(value)


mac_option = click.option("--mac", callback=mac_arg, help="The MAC address the guest sees.")
vlan_option = click.option("--vlan", type=Digits(1, 4094),
                           help="VLAN tag (1-4094) applied by the PF to the VF's traffic.")


dry_run_option = click.option("--dry-run", is_flag=True,
                              help="Print the plan (the exact sysfs writes) and change nothing.")
force_option = click.option("--force", is_flag=True,
                            help="Go on although the host uses the function (network, storage).")


timeout_option = click.option(
    "--timeout", type=Seconds(0.1, 3600), default=30.0, show_default=True,
    metavar="SECONDS",
    help="How long to wait for the kernel or a guest (VFs appearing and binding, a VF in "
         "reset, a guest letting go of a device).")


def on_off(ctx: click.Context, param: click.Parameter, value: str | None) -> bool | None:
    return None if value is None else value == "on"
