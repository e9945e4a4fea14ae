"""Options and arguments the commands share, each with its one rule (a duration, a count,
a VLAN, an address, a MAC), and JSON output. The number rules live in cli.rules, which the
fleet layer (the Ansible modules) checks its arguments with."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

import click

from pcimgr.cli.rules import TIMEOUT, VLAN
from pcimgr.cli.rules import Digits as Digits  # the commands' types, where they always were
from pcimgr.cli.rules import Seconds as Seconds
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput

if TYPE_CHECKING:  # Tab completion only: not imported by every run
    from click.shell_completion import CompletionItem


class Address(click.ParamType):
    """A PCI function as people write it (`04:00.0`, `0000:04:00.0`, `pci_0000_04_00_0`), by
    its interface (`enp4s0f0`, as dpdk-devbind takes it) or by its ids (`8086:10ca`, as
    `vfio-pci.ids=` does: where several functions may be given, every function with those
    ids), resolved once here; Tab offers the functions the host has."""

    name = "address"

    def __init__(self, mdevs: bool = False) -> None:
        self.mdevs = mdevs  # an mdev's UUID is taken too (returned as its canonical str)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        # BadInput itself, not click's "Invalid value": one line naming the accepted forms
        if isinstance(value, PciAddress):
            return value
        if self.mdevs:
            from pcimgr.core.mdev import is_uuid, parse_uuid
            if is_uuid(value):
                return parse_uuid(value)
        try:
            return PciAddress.parse(value)
        except BadInput:
            ids = _IDS.fullmatch(value)
            if ctx is None or not ids and (not _INTERFACE.fullmatch(value)
                                           or value.startswith("pci_")):
                raise
        from pcimgr.cli import complete
        from pcimgr.host import discovery
        sysfs = complete.context_of(ctx).sysfs
        if not ids:
            return discovery.interface_function(sysfs, value)
        found = discovery.functions_with_ids(sysfs, value)
        if len(found) == 1 or (found and param is not None and param.nargs == -1):
            return tuple(found) if param is not None and param.nargs == -1 else found[0]
        if not found:
            raise BadInput(f"no PCI function of this host has ids {value}; `pcimgr list "
                           "--all` shows each function's vendor:device")
        raise BadInput(f"{value} is {len(found)} functions ({', '.join(map(str, found))}); "
                       "give one address")

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


_INTERFACE = re.compile(r"[A-Za-z][A-Za-z0-9_.@-]{0,14}")  # IFNAMSIZ: 15 characters
_IDS = re.compile(r"[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}")  # vendor:device, as lspci -d takes them


def flat_addresses(ctx: click.Context, param: click.Parameter,
                   value: tuple[Any, ...]) -> tuple[PciAddress, ...]:
    """ADDR... with an ids selector among them: each function once, in the order given."""
    found: list[PciAddress] = []
    for item in value:
        for address in (item if isinstance(item, tuple) else (item,)):
            if address not in found:
                found.append(address)
    return tuple(found)
ADDRESS = Address()
ADDRESS_OR_MDEV = Address(mdevs=True)
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
    import json  # only JSON output pays for it
    click.echo(json.dumps(data, indent=indent))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/json.md).")


def mac_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from pcimgr.host import vfinfo
    return None if value is None else vfinfo.check_mac(value)


mac_option = click.option("--mac", callback=mac_arg, help="The MAC address the guest sees.")
vlan_option = click.option("--vlan", type=VLAN,
                           help="VLAN tag (1-4094) applied by the PF to the VF's traffic.")


dry_run_option = click.option("--dry-run", is_flag=True,
                              help="Print the plan (the exact sysfs writes) and change nothing.")
force_option = click.option("--force", is_flag=True,
                            help="Go on although the host uses the function (network, storage).")


timeout_option = click.option(
    "--timeout", type=TIMEOUT, default=30.0, show_default=True,
    metavar="SECONDS",
    help="How long to wait for the kernel or a guest (VFs appearing and binding, a VF in "
         "reset, a guest letting go of a device).")


def on_off(ctx: click.Context, param: click.Parameter, value: str | None) -> bool | None:
    return None if value is None else value == "on"
