"""What a plan step is, for the engine: the protocol every kind of step meets, the base its
journal form comes from, and the registry that reads a journaled step back.

The engine knows no feature: each step module registers its kinds, and a journal entry
names the module its step came from, so that recovery imports exactly that module.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from pcimgr.host.machine import Machine
    from pcimgr.plans.records import Changes


class Step(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def address(self) -> str:
        """The function the step acts on."""

    def summary(self) -> str: ...

    def describe(self) -> list[str]:
        """The exact writes and calls, as --dry-run prints them."""

    def apply(self, machine: Machine) -> None: ...

    def undo(self, machine: Machine) -> None:
        """Put back what apply changed, acting only on what differs now."""

    def to_json(self) -> dict[str, Any]: ...

    def undo_moves(self) -> tuple[tuple[str, str | None], ...]:
        """(function, driver; None: no driver) for each function undo() may move: recovery
        holds them to the rules a fresh plan's moves meet (the caller's vet)."""

    def undo_removes(self) -> tuple[str, ...]:
        """PFs whose VFs undo() may remove (it rewrites sriov_numvfs)."""

    def undo_netdevs(self) -> tuple[tuple[str, str, bool], ...]:
        """(function, interface, down) for each interface undo() acts on, which must be the
        function's own; down: undo takes its link down."""

    def undo_describe(self) -> list[str]:
        """The writes and calls undo() may make, as `recover --dry-run` prints them."""

    def undo_vfio(self) -> tuple[str, ...]:
        """The VFIO devices (an mdev's UUID, a VF's address) whose use by a guest undo() would
        end: recovery refuses while a process holds their group."""

    def voids(self) -> tuple[str, ...]:
        """Functions whose original-driver records this step makes void (VFs it removes or
        creates: a VF pcimgr made has no host driver to give back)."""

    def remember(self, records: Changes) -> None:
        """Update the original-driver records for the move this step makes."""


class StepBase:
    """Mixed into the steps' frozen dataclasses: the journal form is the fields and the
    module that registered the kind; most steps leave the records and drivers alone."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)  # type: ignore[call-overload]
        return data | {"module": type(self).__module__}

    def undo_moves(self) -> tuple[tuple[str, str | None], ...]:
        return ()

    def undo_removes(self) -> tuple[str, ...]:
        return ()

    def undo_netdevs(self) -> tuple[tuple[str, str, bool], ...]:
        return ()

    def undo_describe(self) -> list[str]:
        return []

    def undo_vfio(self) -> tuple[str, ...]:
        return ()

    def voids(self) -> tuple[str, ...]:
        return ()

    def remember(self, records: Changes) -> None:
        """Most steps move no function between drivers."""


S = TypeVar("S", bound=type)
_KINDS: dict[str, type] = {}
# Journals written before entries named their module (format of pcimgr 0.1.0 sessions 1-9).
_MODULE_OF_KIND = {"bind": "pcimgr.drivers.binding", "reprobe": "pcimgr.drivers.binding",
                   "autoprobe": "pcimgr.sriov.steps", "numvfs": "pcimgr.sriov.steps",
                   "vfconfig": "pcimgr.sriov.steps", "link": "pcimgr.sriov.steps",
                   "attach": "pcimgr.guests.steps", "detach": "pcimgr.guests.steps"}


def register(cls: S) -> S:
    """Class decorator of a step kind: `kind` is the dataclass field's default."""
    _KINDS[vars(cls)["kind"]] = cls
    return cls


def kind_of(data: dict[str, Any]) -> type:
    """The class of a journaled step; ValueError for a kind nobody registered."""
    kind = data.get("kind")
    module = data.get("module", _MODULE_OF_KIND.get(str(kind)))
    if isinstance(module, str) and module.startswith("pcimgr.") and kind not in _KINDS:
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # named below as an unknown kind
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ValueError(f"unknown step kind {kind!r}")
    return _KINDS[kind]


def from_json(data: dict[str, Any]) -> Step:
    cls = kind_of(data)
    fields = {k: v for k, v in data.items() if k != "module"}
    step: Step = cls.from_json(fields) if hasattr(cls, "from_json") else cls(**fields)
    return step
