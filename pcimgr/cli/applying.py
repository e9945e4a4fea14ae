"""apply: make the host match the definitions; at boot, udev's parallel requests done together.

udev starts `apply --device PF` for each PF's add and bind event, in parallel workers
(docs/persistence.md, "Requests combine"). Each such run records its request
(plans/requests.py) and waits; the run that gets the lock applies every recorded request,
each IOMMU group of definitions in its own transactions as its own run would have, and
writes each request's outcome (exit code, message, the lines it would have printed) for
its process to report. So one interpreter plans and checks, and a failure of one PF is
that PF's request's exit code and lines, not the others'.
"""

from __future__ import annotations

import os
from typing import Any

import click

from pcimgr.cli.context import Context
from pcimgr.cli.runner import print_plan, progress, say_long_waits, vet
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import PcimgrError


class Report:
    """What one apply prints, kept as lines (another process may print them) and, for this
    process's own request, echoed as it goes."""

    def __init__(self, live: bool, quiet: bool) -> None:
        self.live = live
        self.quiet = quiet
        self.lines: list[tuple[str, bool, str]] = []

    def say(self, text: str, err: bool = False, when_quiet: bool = True) -> None:
        self.lines.append(("err" if err else "out", when_quiet, text))
        if self.live and (when_quiet or not self.quiet):
            click.echo(text, err=err)


def run(obj: Context, chosen: list[Any], damaged: list[Any], report: Report, timeout: float,
        survey: Any = None, mdevs: bool = False) -> None:
    """Apply these definitions (the caller holds the lock): the VFs and drivers in one
    transaction, then each PF's VF settings in one more. damaged: the definition files that
    did not read (named, then exit 11). survey: the host's use, when the caller has it.
    mdevs (the whole apply, as the boot unit runs it): then the auto mdevs (mdevctl's
    definitions) of the parents there, each on its own, in case their udev event was missed."""
    from pcimgr.core.errors import Mismatch
    from pcimgr.host import discovery, usage
    from pcimgr.persist import definitions
    from pcimgr.persist import planner as persist
    from pcimgr.plans import runner
    state = obj.state
    addresses = tuple(PciAddress.parse(d.address) for d in chosen)
    host = discovery.scan_related(obj.sysfs, addresses)
    planned = persist.plan_apply(obj.machine, host,
                                 survey if survey is not None else usage.survey(obj.machine),
                                 chosen, timeout, obj.holdings())
    _say_checked(report, damaged, planned)
    if planned.proposal.plan.steps:
        runner.execute(obj.machine, state, planned.proposal, progress() if report.live else None)
        for step in planned.proposal.plan.steps:
            report.say(step.summary())
    for d in planned.settings:
        host = discovery.scan_related(obj.sysfs, (PciAddress.parse(d.address),))
        settings = persist.plan_vf_settings(obj.machine, host, d, timeout)
        if settings.plan.steps:
            runner.execute(obj.machine, state, settings)
            for step in settings.plan.steps:
                report.say(step.summary())
    started, defined = _auto_mdevs(obj, report) if mdevs else (0, False)
    definitions.raise_damaged(damaged)
    if planned.skipped:
        raise Mismatch(f"{len(planned.skipped)} definition(s) not applied (see above)")
    if not planned.proposal.plan.steps and not started:
        report.say("The host matches the definitions." if chosen or defined
                   else "No definitions.", when_quiet=False)


def _auto_mdevs(obj: Context, report: Report) -> tuple[int, bool]:
    """Start the auto mdevs that are not running, one transaction for all: how many, and
    whether any mdev is defined at all."""
    from pcimgr.mdev import definitions as mdev_definitions
    from pcimgr.mdev import planner as mdev_planner
    from pcimgr.plans import runner
    found = mdev_definitions.load_all(obj.machine)
    from pcimgr.core.terminal import safe
    for problem in found.problems:
        report.say(safe(f"pcimgr: warning: {problem}"), err=True)
    auto = [d for d in found.definitions if d.start == "auto"]
    if not auto:
        return 0, bool(found.definitions)
    proposal = mdev_planner.plan_start(obj.machine, auto, "apply (mdevs)", skip_failing=True)
    for note in proposal.notes:
        if note.startswith("not starting"):  # not "running already": that is the aim
            report.say(safe(note), err=True)
    if proposal.plan.steps:
        runner.execute(obj.machine, obj.state, proposal)
        for step in proposal.plan.steps:
            report.say(step.summary())
    return len(proposal.plan.steps), True


def dry_run(obj: Context, chosen: list[Any], damaged: list[Any], timeout: float,
            quiet: bool) -> None:
    from pcimgr.host import discovery, usage
    from pcimgr.persist import planner as persist
    host = discovery.scan_related(obj.sysfs, tuple(PciAddress.parse(d.address) for d in chosen))
    planned = persist.plan_apply(obj.machine, host, usage.survey(obj.machine), chosen, timeout,
                                 obj.holdings())
    _say_checked(Report(True, quiet), damaged, planned)
    print_plan(planned.proposal, obj.state)
    for d in planned.settings:
        click.echo(f"then VF settings of {d.address}: {d.describe()}")


def _say_checked(report: Report, damaged: list[Any], planned: Any) -> None:
    """What the checks left out (damaged files, skipped definitions) and the plan's notes."""
    for e in damaged:
        report.say(f"skipped {e}", err=True)
    for line in planned.skipped:
        report.say(f"skipped {line}", err=True)
    for note in planned.proposal.notes:
        report.say(note, when_quiet=note.startswith("warning"))


class Done(PcimgrError):
    """Another run's outcome of this request, with that run's exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def device(obj: Context, address: PciAddress, timeout: float, quiet: bool) -> None:
    """`apply --device`: record the request, then either do every recorded request under the
    lock, or report the outcome another run wrote for it."""
    from pcimgr.persist import definitions
    from pcimgr.plans import requests
    found, _ = definitions.load_all(obj.config_dir)
    definitions.load(obj.config_dir, str(address))  # a damaged definition of it is the answer
    definitions.select(found, address)  # none: NotFound now, before waiting for anybody
    machine = obj.machine
    machine.require_root("changing the host (writes to /sys)")
    say_long_waits()
    state = obj.state_path  # the holder checks obj.state (the overlap) itself
    params = _params(obj, state, timeout)
    request = requests.record(machine.lock_dir, str(address), params)
    own: list[PcimgrError | None] = []

    def work(recovered: str | None) -> None:
        from pcimgr.core.errors import RolledBack
        from pcimgr.plans import transaction
        obj.state  # noqa: B018 - refuses a state directory overlapping the definitions
        if recovered and transaction.INCOMPLETE in recovered:
            raise RolledBack(f"{recovered}; put those right before changing anything else")
        if recovered:
            click.echo(f"pcimgr: {recovered}", err=True)
        own.append(serve(obj, request, params, timeout, quiet))

    try:
        result = requests.locked(machine, state, obj.lock_timeout, request, work, vet(obj),
                                 obj.config_dir)
    finally:
        requests.forget(machine.lock_dir, request)
    if result is None:
        if own and own[0] is not None:
            raise own[0]
        return
    for stream, when_quiet, text in result.lines:
        if when_quiet or not quiet:
            click.echo(text, err=stream == "err")
    others = result.together - 1
    click.echo(f"pcimgr: {address} was applied by the run of pid {result.by}"
               + (f", together with {others} other request(s)" if others else ""), err=True)
    if result.code:
        raise Done(result.message, result.code)


def _params(obj: Context, state: str, timeout: float) -> dict[str, Any]:
    """What must be equal for requests to combine: the same definitions, state and wait."""
    return {"config": os.path.realpath(obj.config_dir), "state": os.path.realpath(state),
            "timeout": timeout}


def serve(obj: Context, own: Any, params: dict[str, Any], timeout: float,
          quiet: bool) -> PcimgrError | None:
    """Under the lock: every recorded request with these parameters, round after round until
    none is left (one that came during a round is done by the next: its event may be newer
    than that round's look at the host). Returns the own request's error, if any."""
    from pcimgr.host import usage
    from pcimgr.persist import definitions
    from pcimgr.persist import planner as persist
    from pcimgr.plans import requests
    lock_dir = obj.machine.lock_dir
    me = os.getpid()
    found, _ = definitions.load_all(obj.config_dir)  # define waits for the lock: they stay
    done: set[str] = set()
    mine: PcimgrError | None = None
    others: list[int] = []
    while True:
        todo = [r for r in requests.pending(lock_dir, params) if r.name not in done]
        if own.name not in done and all(r.name != own.name for r in todo):
            todo.insert(0, own)  # its file went (removed by hand): it is still asked
        if not todo:
            break
        requests.take(lock_dir, todo)
        groups: dict[tuple[str, ...], tuple[list[Any], list[Any]]] = {}
        for r in todo:
            try:
                address = PciAddress.parse(r.key)  # first: the key names a file below cfg
                definitions.load(obj.config_dir, str(address))
                chosen = persist.select(found, address)
            except (PcimgrError, ValueError) as e:
                bad = e if isinstance(e, PcimgrError) else Done(str(e), 2)
                requests.finish(lock_dir, r, requests.Outcome(
                    bad.exit_code, str(bad), (), me, len(todo)))
                if r.pid == me:
                    mine = bad
                continue
            groups.setdefault(tuple(d.address for d in chosen), (chosen, []))[1].append(r)
        survey = usage.survey(obj.machine)  # once a round, as one `apply` surveys once
        for chosen, asked in sorted(groups.values(), key=lambda g: all(r.pid != me
                                                                         for r in g[1])):
            live = any(r.pid == me for r in asked)
            report = Report(live, quiet)
            error: PcimgrError | None = None
            try:
                run(obj, chosen, [], report, timeout, survey)
            except PcimgrError as e:
                error = e
            result = requests.Outcome(error.exit_code if error else 0,
                                      str(error) if error else "", tuple(report.lines), me,
                                      len(todo))
            for r in asked:
                requests.finish(lock_dir, r, result)
                if r.pid == me:
                    mine = error
                else:
                    others.append(r.pid)
            if error is not None and _stops(error):
                raise error  # the others' processes take the lock and do theirs
        done |= {r.name for r in todo}
    if others:
        click.echo(f"pcimgr: this run also applied {len(others)} request(s) of other runs "
                   f"(pid {', '.join(str(p) for p in sorted(set(others)))})", err=True)
    return mine


def _stops(error: PcimgrError) -> bool:
    """After a signal, or a rollback that could not restore everything, this run does no
    more: what is left is asked again by each request's own process (which recovers or
    refuses as any run does)."""
    from pcimgr.core.errors import Interrupted
    from pcimgr.plans import transaction
    return (isinstance(error, Interrupted) or isinstance(error.__cause__, Interrupted)
            or transaction.INCOMPLETE in str(error))
