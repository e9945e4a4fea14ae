"""A VF's properties as its PF's driver reports them: the one shape every layer passes
around (the machine reads it, plans keep it to restore, `vfs list` prints it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class VfConfig:
    """None where the driver says nothing (a PF whose driver has no such setting)."""

    mac: str | None = None
    vlan: int | None = None
    qos: int | None = None
    spoofchk: bool | None = None
    trust: bool | None = None
    link_state: str | None = None

    KEYS: ClassVar[tuple[str, ...]] = ("mac", "vlan", "qos", "spoofchk", "trust", "link_state")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VfConfig:
        return cls(**{k: data.get(k) for k in cls.KEYS})

    def get(self, key: str) -> Any:
        """A setting by the name `vfs set` and definitions give it; None for any other."""
        return getattr(self, key) if key in self.KEYS else None

    def as_dict(self) -> dict[str, Any]:
        """For the journal and JSON, where a step keeps what to restore."""
        return asdict(self)
