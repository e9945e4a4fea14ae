"""What a desired-state change shares (the Ansible modules): the host, the plan, check mode.

The same path as the CLI's change commands (cli.change): plans from a fresh snapshot
and the host-dependency survey, then, for real, as root under the lock after recovering
a killed run, through hostdriver.execute (journal, rollback, original-driver records).
Check mode stops after the plans: no lock, no root, no write, as --dry-run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pcimgr.cli import rules
from pcimgr.cli.context import Context
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import PcimgrError, RolledBack
from pcimgr.core.model import Host
from pcimgr.host import discovery, usage
from pcimgr.host.machine import Machine
from pcimgr.host.usage import Survey
from pcimgr.persist import definitions
from pcimgr.persist.definitions import Definition
from pcimgr.plans import interrupts, runner
from pcimgr.plans.runner import Proposal

T = TypeVar("T")


@dataclass
class Result:
    """changed: something was (check mode: would be) written. before/after: the touched
    state, for --diff; in check mode `after` is what the plans would make it."""

    changed: bool = False
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    plan: list[str] = field(default_factory=list)    # the steps and their exact writes
    notes: list[str] = field(default_factory=list)

    def add(self, proposal: Proposal) -> None:
        for module in (proposal.module, *proposal.also_load):
            if module:
                self.plan.append(f"modprobe {module}")
        self.plan += proposal.plan.describe().splitlines() if proposal.plan.steps else []
        self.notes += proposal.notes
        self.changed = self.changed or bool(proposal.plan.steps)


class Session:
    def __init__(self, sysfs_root: str = "/sys", state_dir: str | None = None,
                 config_dir: str | None = None, lock_timeout: float = 30.0,
                 check_mode: bool = False, connect: str | None = None) -> None:
        lock_timeout = rules.checked(rules.LOCK_TIMEOUT, lock_timeout, "lock_timeout")
        self.context = Context(sysfs_root, state_dir, lock_timeout, connect, config_dir)
        self.check_mode = check_mode

    @property
    def machine(self) -> Machine:
        return self.context.machine

    @property
    def state(self) -> str:
        return self.context.state

    @property
    def config_dir(self) -> str:
        return self.context.config_dir

    def scan(self, addresses: tuple[PciAddress, ...]) -> tuple[Host, Survey]:
        return (discovery.scan_related(self.machine.sysfs, addresses),
                usage.survey(self.machine))

    def run(self, work: Callable[[], T]) -> T:
        """work() for real: as root, under the lock, after undoing what a killed run left."""
        if self.check_mode:
            return work()
        self.machine.require_root("changing the host (writes to /sys)")
        from pcimgr.drivers import recovery
        done: list[T] = []
        runner.locked(self.machine, self.state, self.context.lock_timeout,
                      lambda recovered: done.append(work()), recovery.vet(self.machine),
                      self.config_dir)
        return done[0]

    def execute(self, proposal: Proposal) -> None:
        if proposal.plan.steps and not self.check_mode:
            runner.execute(self.machine, self.state, proposal)

    def define_then(self, changes: dict[str, Definition | None],
                    before: dict[str, Definition], move: Callable[[], None]) -> None:
        """The definitions (None: removed), then move(), as one change: they are written
        first, so a failed write (a full disk) stops it before the host is touched, and put
        back as they were when move fails (its transaction has put the host back)."""
        done: list[str] = []
        try:
            for address, definition in changes.items():
                done.append(address)
                _put(self.config_dir, address, definition)
        except (OSError, PcimgrError) as e:
            # the one that failed put its own files back (definitions' one-change write)
            self._put_back(done[:-1], before)
            raise RolledBack(f"{e}; the host was not changed") from e
        try:
            move()
        except RolledBack as e:
            self._put_back(done, before)
            raise RolledBack(f"{e}; the definitions were put back as they were" if done
                             else str(e)) from e
        except BaseException:
            self._put_back(done, before)
            raise

    def _put_back(self, addresses: list[str], before: dict[str, Definition]) -> None:
        with interrupts.shielded(deliver=False):
            for address in reversed(addresses):
                try:
                    _put(self.config_dir, address, before.get(address))
                except (OSError, PcimgrError) as e:
                    raise RolledBack(f"the definition of {address} could not be put back "
                                     f"({e}); check {self.config_dir}") from e


def _put(config_dir: str, address: str, definition: Definition | None) -> None:
    if definition is None:
        definitions.remove(config_dir, address)
    else:
        definitions.save(config_dir, definition)
