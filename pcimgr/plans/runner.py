"""Running a proposal: the original-driver records its steps change, the module to load,
then the transaction; and the host's lock with recovery of what a killed run left.
Every feature's plans run through here; nothing here knows a feature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from pcimgr.core.errors import RolledBack
from pcimgr.host.machine import Machine
from pcimgr.plans import filechange, history, lock, records, requests, statefile, transaction


class Proposal(NamedTuple):  # not a dataclass: cheaper at start (transaction.Plan)
    """A plan and what it needs before its first step."""

    plan: transaction.Plan
    module: str | None       # driver to load first (modprobe), if it is not loaded
    notes: tuple[str, ...]   # no-ops worth telling
    # state files to write (data) or remove (None) once the plan succeeded; relative paths
    records: tuple[tuple[str, dict[str, Any] | None], ...] = ()
    also_load: tuple[str, ...] = ()  # further drivers to load (detach: several variants)


def execute(machine: Machine, state: str, proposal: Proposal,
            progress: transaction.Progress | None = None) -> None:
    """Apply the plan (the caller holds the lock) and, before its journal goes, the records
    of original drivers: worked out first, so a damaged record stops it before any write."""
    changes = records.Changes(state)
    for rel, data in proposal.records:
        changes.set(rel, data)
    voided = {a for step in proposal.plan.steps for a in step.voids()}
    for address in voided:
        changes.set(records.device_rel(address), None)
    for step in proposal.plan.steps:
        if step.address not in voided:
            step.remember(changes)
    for module in (proposal.module, *proposal.also_load):
        if module:
            machine.load_module(module)
    try:
        transaction.execute(proposal.plan, machine, state, progress, changes)
    except RolledBack as e:
        history.add(machine, state, proposal.plan, "rolled back", str(e))
        raise
    history.add(machine, state, proposal.plan, "done")


def locked(machine: Machine, state: str, wait: float,
           work: Callable[[str | None], None], vet: transaction.Vet,
           config: str | None = None) -> None:
    """Run work(recovery message) under the host's lock, after removing the temporary files
    and finishing what a killed run left: a change of the configuration CONFIG, and a
    transaction (if vet accepts its undo)."""
    with lock.exclusive(machine.lock_dir, wait):
        recover_then(machine, state, work, vet, config)


def recover_then(machine: Machine, state: str, work: Callable[[str | None], None],
                 vet: transaction.Vet, config: str | None = None) -> None:
    """Under the lock: the temporary files removed, a killed change of CONFIG's files put
    back, a killed run's transaction finished once vet accepted it (their messages for
    work), then work."""
    statefile.sweep(state, ("", "devices", "assignments", "handoffs"))
    requests.tidy(machine.lock_dir)
    said = []
    if config is not None:
        statefile.sweep_tree(config)
        said.append(filechange.finish(config))
    recovered = transaction.recover(machine, state, vet)
    if recovered:
        history.recovered(machine, state, recovered)
    said.append(recovered)
    work("; ".join(m for m in said if m) or None)
