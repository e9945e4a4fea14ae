"""snapshot: everything pcimgr reads of this host in one file, for support, fleet facts and
fixtures; read back with `pcimgr --snapshot FILE COMMAND` (docs/snapshots.md)."""

from __future__ import annotations

import os
import sys
from typing import IO, TYPE_CHECKING

import click

from pcimgr.cli.context import Context
from pcimgr.core.errors import BadInput, PcimgrError
from pcimgr.core.terminal import safe

if TYPE_CHECKING:
    from collections.abc import Callable

    from pcimgr.host.libvirt_adapter import Domain
    from pcimgr.host.snapshot.take import Taken


@click.command()
@click.argument("file", metavar="FILE")
@click.option("--no-guests", is_flag=True,
              help="Leave libvirt out: the snapshot's guests are unknown.")
@click.pass_obj
def snapshot(obj: Context, file: str, no_guests: bool) -> None:
    """Write this host as pcimgr sees it to FILE (a gzip'ed tar; - for standard output):
    the sysfs it reads, the kernel's command line and modules.alias, udev's names, the
    interfaces' addresses and routes, mounts, swaps, who holds /dev/vfio, the guests' PCI
    devices and the definitions. No secrets: nothing from /etc but pcimgr's own files, and
    of each guest only its PCI devices."""
    from pcimgr.host.snapshot import take
    machine = obj.machine
    domains = None if no_guests else _domains(obj)
    if os.geteuid() != 0 and machine.needs_root:
        click.echo("pcimgr: note: not root: config space past its first 64 bytes and files "
                   "other users' processes hold open are left out", err=True)
    if file == "-":
        if sys.stdout.isatty():
            raise BadInput("refusing to write a snapshot to a terminal; give FILE or redirect "
                           "standard output")
        taken = take.take(machine, sys.stdout.buffer, domains, obj.config_dir, deep=True)
        sys.stdout.buffer.flush()
    else:
        taken = _write_atomically(file, lambda out: take.take(
            machine, out, domains, obj.config_dir, deep=True))
    line = safe(f"Snapshot of {machine.kind} in {file}: {taken.functions} PCI functions, "
                f"{taken.files} files and {taken.links} links ({taken.size // 1024} KiB); "
                f"read it with `pcimgr --snapshot {file} list`")
    click.echo(line, err=file == "-")
    if obj.holdings_problem:
        click.echo(safe(obj.holdings_problem), err=True)


def _domains(obj: Context) -> list[Domain] | None:
    recorded = obj.machine.recorded_domains()
    if recorded is not None or obj.asked_uri is None:
        return recorded
    try:
        return obj.libvirt().domains()
    except PcimgrError as e:
        obj.holdings_problem = f"pcimgr: note: guests unknown in the snapshot: {e}"
        return None


def _write_atomically(file: str, fill: Callable[[IO[bytes]], Taken]) -> Taken:
    """FILE appears whole or not at all: written beside it, synced, renamed over it."""
    path = os.path.abspath(file)
    directory, name = os.path.split(path)
    if os.path.isdir(path):
        raise BadInput(f"{file} is a directory; give the snapshot a file name "
                       "(host.pcimgr-snapshot.tar.gz)")
    tmp = os.path.join(directory, f".{name}.pcimgr-tmp.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
    except FileNotFoundError:
        raise BadInput(f"cannot write {file}: {directory} does not exist; create it or give "
                       "another path") from None
    try:
        with os.fdopen(fd, "wb") as out:
            taken = fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return taken
