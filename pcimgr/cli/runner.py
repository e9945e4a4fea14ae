"""Validate, plan, then act: the dry run, the change under the host's lock after recovery,
and progress lines; shared by every command that changes the host or its definitions."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pcimgr.cli.context import Context
from pcimgr.core.address import PciAddress

if TYPE_CHECKING:
    from pcimgr.plans.transaction import Vet


def mention_unfinished(obj: Context) -> None:
    """Read commands: one line on stderr when a killed run left its journal (never on stdout,
    never in JSON), so the administrator looking at the host knows it is half-changed."""
    from pcimgr.plans import pending
    state = os.path.abspath(obj.state_dir) if obj.state_dir else obj.machine.default_state_dir
    if pending.unfinished(state):
        click.echo(f"pcimgr: note: a killed run left an unfinished transaction "
                   f"({pending.journal_path(state)}); `pcimgr recover --dry-run` shows what "
                   "undoing it does", err=True)


def print_plan(proposal: Any, state: str) -> None:
    """What --dry-run shows: the plan's writes and calls, and a pending recovery."""
    from pcimgr.plans import transaction
    if os.path.exists(transaction.journal_path(state)):
        click.echo("Note: an unfinished transaction would be rolled back first.")
    click.echo(f"Plan for `pcimgr {proposal.plan.command}` (--dry-run: nothing changed):")
    for module in (proposal.module, *proposal.also_load):
        if module:
            click.echo(f"0. modprobe {module}")
    click.echo(proposal.plan.describe())


def change(obj: Context, addresses: tuple[PciAddress, ...], propose: Callable[..., Any],
           dry_run: bool, report: Callable[[Any], str] | None = None,
           then: Callable[[], None] | None = None) -> None:
    """Validate, plan, then act under the lock with journal and rollback (docs/plans.md):
    propose(host, survey, state) from the functions concerned (and their groups and VFs)
    and the host-dependency survey, both read again for each proposal. Without report,
    the moves made. then: after the change succeeded (or had nothing to do), still under
    the lock; after the plan in a dry run."""
    from pcimgr.host import discovery, usage
    state = obj.state

    def proposed() -> Any:
        return propose(discovery.scan_related(obj.sysfs, addresses), usage.survey(obj.machine),
                       state)

    def moved(proposal: Any) -> str:
        from pcimgr.cli import render
        found = tuple(PciAddress.parse(s.address) for s in proposal.plan.steps)
        return render.moves(proposal.plan, discovery.scan_related(obj.sysfs, found))
    change_plan(obj, proposed, dry_run, report or moved, then)


def change_plan(obj: Context, propose: Callable[[], Any], dry_run: bool,
                report: Callable[[Any], str], then: Callable[[], None] | None = None) -> None:
    """change() for any plan (mdevs: no PCI scan, no survey): validate, plan, then act under
    the lock with journal and rollback."""
    from pcimgr.plans import runner
    state = obj.state
    if dry_run:
        proposal = propose()
        print_plan(proposal, state)
        for note in proposal.notes:
            click.echo(f"({note})")
        if then is not None:
            then()
        return
    if _first_change(obj, state):  # validate, then lock: a refusal leaves no lock file
        obj.machine.require_root("changing the host (writes to /sys)")
        propose()

    def work() -> None:
        proposal = propose()
        for note in proposal.notes:
            click.echo(note)
        if not proposal.plan.steps:
            click.echo("Nothing to do.")
        else:
            runner.execute(obj.machine, state, proposal, progress())
            click.echo(report(proposal))
        if then is not None:
            then()

    run_locked(obj, state, work)


def run_locked(obj: Context, state: str, work: Callable[[], None]) -> None:
    """Act as root under the lock, after undoing (and saying so) what a killed run left."""
    from pcimgr.plans import runner
    obj.machine.require_root("changing the host (writes to /sys)")
    say_long_waits()

    def after_recovery(recovered: str | None) -> None:
        from pcimgr.core.errors import RolledBack
        from pcimgr.plans import transaction
        if recovered and transaction.INCOMPLETE in recovered:
            raise RolledBack(f"{recovered}; put those right before changing anything else")
        if recovered:
            click.echo(f"pcimgr: {recovered}", err=True)
        work()
    runner.locked(obj.machine, state, obj.lock_timeout, after_recovery, vet(obj),
                  obj.config_dir)


def vet(obj: Context, force: bool = False) -> Vet:
    """Recovery's re-check of a journal's undo: the drivers' rules for a fresh plan, and a
    hand-off's steps held to their guest's profile."""
    from pcimgr.drivers import recovery
    drivers = recovery.vet(obj.machine, force)

    def check(steps: tuple[Any, ...]) -> None:
        drivers(steps)
        guests = {s.vm for s in steps if type(s).__module__ == "pcimgr.handoff.steps"}
        if guests:
            from pcimgr.handoff import planner, profiles
            for vm in sorted(guests):
                planner.vet_steps(obj.machine, vm, profiles.load(obj.config_dir, vm), steps)
    return check


def run_locked_config(obj: Context, work: Callable[[], None],
                      check: Callable[[], object] | None = None) -> None:
    """Change definitions (or install files) under the host's lock, which every changing
    command takes: concurrent defines of one PF would otherwise lose each other's VFs.
    check: work's refusals, run once more before the lock while no run has made it."""
    from pcimgr.plans import filechange, lock, statefile
    obj.machine.check_writable()
    obj.state  # noqa: B018 - refuses a state directory overlapping the definitions
    if check is not None and not lock.made(obj.machine.lock_dir):
        check()
    say_long_waits()
    with lock.exclusive(obj.machine.lock_dir, obj.lock_timeout):
        statefile.sweep_tree(obj.config_dir)
        put = filechange.finish(obj.config_dir)
        if put:
            click.echo(f"pcimgr: {put}", err=True)
        work()


def _first_change(obj: Context, state: str) -> bool:
    """No run has made the host's lock (a fresh host, or /run after a boot), and no killed
    run's journal waits to be undone (which could change what the plan refuses)."""
    from pcimgr.plans import lock, pending
    return not lock.made(obj.machine.lock_dir) and not pending.unfinished(state)


def on_terminal() -> bool:
    return sys.stderr.isatty() and sys.stdout.isatty()


def say_long_waits() -> None:
    """On a terminal, a wait of more than a few seconds (the lock, VFs appearing, a driver
    binding, a guest letting go) says "pcimgr: waiting for ... (N s)" on stderr every few
    seconds (host/waiting.py); on pipes and in logs, nothing."""
    from pcimgr.host import waiting
    waiting.notify_to(_waiting_line if on_terminal() else None)


def _waiting_line(text: str) -> None:
    click.echo(f"pcimgr: {text}", err=True)


def progress() -> Callable[[int, int, Any], None] | None:
    """Step by step on a terminal (VFs appearing and binding take seconds); silent on pipes."""
    if not on_terminal():
        return None

    def show(done: int, total: int, step: Any) -> None:
        click.echo(f"  [{done}/{total}] {step.summary()}", err=True)
    return show
