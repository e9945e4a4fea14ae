"""Tab completion (bash, zsh, fish through click): the functions, drivers and domains of the
host the command line names, and the simulated profiles. Completion runs before any command
callback, so the host is taken from the parsed global options here; it never prints an
error (a half-typed command line is not a mistake)."""

from __future__ import annotations

from collections.abc import Callable

import click
from click.shell_completion import CompletionItem

from pcimgr.cli.context import Context
from pcimgr.core.errors import PcimgrError
from pcimgr.host.sysfs import DEVICES

# what a stub driver is called even before its module is loaded
_STUBS = ("vfio-pci", "pci-stub")


def context_of(ctx: click.Context) -> Context:
    """The host the command line names, from its parsed global options (before any
    callback: completion, and parameter types that ask the host)."""
    obj = ctx.find_object(Context)
    if obj is not None:
        return obj
    given = ctx.find_root().params
    return Context(given.get("sysfs_root") or "/sys", given.get("state_dir"), 0.0,
                   given.get("connect"), given.get("config_dir"))


def _listing(ctx: click.Context, rel: str) -> list[str]:
    try:
        return context_of(ctx).sysfs.list_dir(rel)
    except (PcimgrError, OSError):
        return []


def addresses(ctx: click.Context, incomplete: str) -> list[str]:
    """As people type them: `04:00.0` in PCI domain 0, the full form elsewhere or when the
    word started with the domain, libvirt's node name when it started with `pci_`."""
    found = []
    for name in sorted(_listing(ctx, DEVICES)):
        if incomplete.startswith("pci_"):
            form = "pci_" + name.replace(":", "_").replace(".", "_")
        elif name.startswith("0000:") and not incomplete.startswith("0000:"):
            form = name[5:]
        else:
            form = name
        if form.startswith(incomplete):
            found.append(form)
    return found


def drivers(ctx: click.Context, incomplete: str) -> list[str]:
    names = set(_listing(ctx, "bus/pci/drivers")) | set(_STUBS)
    return sorted(n for n in names if n.startswith(incomplete))


def domains(ctx: click.Context, incomplete: str) -> list[str]:
    """libvirt's domains, when libvirt is there to ask (quietly none when it is not)."""
    try:
        names = [d.name for d in context_of(ctx).libvirt().domains()]
    except PcimgrError:
        return []
    return sorted(n for n in names if n.startswith(incomplete))


def profiles(ctx: click.Context, incomplete: str) -> list[str]:
    from pcimgr.sim import profiles as known
    return [n for n in [*known.PROFILES, "scale:"] if n.startswith(incomplete)]


NAMES: dict[str, Callable[[click.Context, str], list[str]]] = {
    "driver": drivers, "domain": domains, "profile": profiles}


def items(words: list[str]) -> list[CompletionItem]:
    return [CompletionItem(w) for w in words]
