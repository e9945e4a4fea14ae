"""recover: what to do about a transaction a killed run left (docs/plans.md)."""

from __future__ import annotations

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import dry_run_option
from pcimgr.cli.runner import run_locked_config, say_long_waits, vet
from pcimgr.core.terminal import safe


@click.command()
@dry_run_option
@click.option("--discard", is_flag=True,
              help="Forget the journal without undoing anything (after checking by hand what "
                   "it names); the way out of a damaged journal.")
@click.option("--force", is_flag=True,
              help="Undo it even where the host-dependency survey finds the host using a "
                   "function the undo moves (never a chipset function).")
@click.pass_obj
def recover(obj: Context, dry_run: bool, discard: bool, force: bool) -> None:
    """Undo the unfinished transaction a killed pcimgr left (every changing command does
    this first, unforced); show it with --dry-run, or forget it with --discard. The undo is
    checked as a fresh plan would be: a journal that would move what the host needs is
    refused."""
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
            click.echo("".join(f"       {line}\n" for line in step.undo_describe()), nl=False)
        if not unfinished.started:
            click.echo("  nothing: no step had started")
        if dry_run:
            try:
                transaction.check(unfinished, state, vet(obj, force))
            except Damaged as e:
                click.echo(str(e)[0].upper() + str(e)[1:])
    if dry_run:
        click.echo("No unfinished transaction." if unfinished is None and problem is None
                   else "(--dry-run: nothing changed)")
        import time

        from pcimgr.handoff import orphans, planner
        for orphan in orphans.orphans(obj.machine, state, time.time()):
            if isinstance(orphan, str):
                click.echo(safe(orphan))
                continue
            click.echo(f"{orphan.found.vm}'s hand-off ({orphan.why}) would be given back:")
            click.echo("".join(f"  {safe(line)}\n" for line in planner.undo_lines(orphan.found)),
                       nl=False)
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
        from pcimgr.cli.commands.handoff import settle_orphans
        said = settle_orphans(obj)
        for line in said:
            click.echo(safe(line))
        if any(transaction.INCOMPLETE in line or "not given back" in line
               or "was not read" in line for line in said):
            raise RolledBack("a hand-off could not be given back whole (above)")
    obj.machine.require_root("recovering a transaction (writes to /sys)")
    say_long_waits()
    runner.locked(obj.machine, state, obj.lock_timeout, report, vet(obj, force),
                  obj.config_dir)
