"""recover: what to do about a transaction a killed run left (docs/plans.md)."""

from __future__ import annotations

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import dry_run_option
from pcimgr.cli.runner import run_locked_config, say_long_waits


@click.command()
@dry_run_option
@click.option("--discard", is_flag=True,
              help="Forget the journal without undoing anything (after checking by hand what "
                   "it names); the way out of a damaged journal.")
@click.pass_obj
def recover(obj: Context, dry_run: bool, discard: bool) -> None:
    """Undo the unfinished transaction a killed pcimgr left (every changing command does
    this first); show it with --dry-run, or forget it with --discard."""
    from pcimgr.core.errors import Damaged, RolledBack
    from pcimgr.plans import runner, statefile, transaction
    state = obj.state
    try:
        unfinished = transaction.read_journal(state)
        problem = None
    except Damaged as e:
        unfinished, problem = None, e
    if problem is not None:
        text = statefile.read_text(transaction.journal_path(state), "", top=state) or ""
        named = transaction.addresses_in(text)
        click.echo(f"The journal is damaged: {problem}")
        click.echo("It cannot be undone automatically. Functions it names: "
                   + (", ".join(named) if named else "none readable")
                   + " (check each with `pcimgr show ADDR`).")
    elif unfinished is not None:
        click.echo(f"Unfinished `{unfinished.command}` (pid {unfinished.pid}); undoing it "
                   "means, for each started step, newest first:")
        for step in reversed(unfinished.started):
            click.echo(f"  undo: {step.summary()}")
        if not unfinished.started:
            click.echo("  nothing: no step had started")
    if dry_run:
        click.echo("No unfinished transaction." if unfinished is None and problem is None
                   else "(--dry-run: nothing changed)")
        return
    if discard:
        def forget() -> None:
            transaction.discard(state)
            click.echo(f"Discarded {transaction.journal_path(state)}; nothing was undone.")
        run_locked_config(obj, forget)
        return
    if problem is not None:
        raise Damaged(f"the journal {transaction.journal_path(state)} is damaged; after "
                      "checking the functions above, `pcimgr recover --discard` forgets it")

    def report(recovered: str | None) -> None:  # under the lock, temporary files removed
        if recovered and transaction.INCOMPLETE in recovered:
            raise RolledBack(recovered)
        click.echo(recovered[0].upper() + recovered[1:] if recovered
                   else "No unfinished transaction.")
    obj.machine.require_root("recovering a transaction (writes to /sys)")
    say_long_waits()
    runner.locked(obj.machine, state, obj.lock_timeout, report)
