"""history: what pcimgr changed on this host, newest first (docs/user-guide.md)."""

from __future__ import annotations

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import Digits, emit_json, json_option
from pcimgr.core.terminal import safe


@click.command()
@click.option("-n", "--limit", type=Digits(1, 200), default=20, show_default=True,
              help="How many changes, newest first.")
@json_option
@click.pass_obj
def history(obj: Context, limit: int, as_json: bool) -> None:
    """The changes pcimgr made here: command, steps, and whether they were done, rolled
    back, or recovered after a killed run."""
    from pcimgr.plans import history as log
    entries = list(reversed(log.load(obj.state)))[:limit]
    if as_json:
        emit_json(entries)
        return
    if not entries:
        click.echo(safe(f"No changes recorded in {log.path(obj.state)}."))
        return
    for e in entries:  # every field read back from a file: safe for the terminal
        click.echo(safe(f"{e['time']}  pcimgr {e['command']}: {e['result']}"))
        for step in e["steps"]:
            click.echo(safe(f"  {step}"))
        if e["detail"]:
            click.echo(safe(f"  ({e['detail']})"))
