"""Every kind of plan step, and reading one back from the journal."""

from __future__ import annotations

from typing import Any

from pcimgr.drivers.binding import BindDriver, Reprobe
from pcimgr.guests.steps import AttachDevice, DetachDevice
from pcimgr.sriov.steps import ConfigureVf, SetAutoprobe, SetLink, SetNumVfs

Step = (BindDriver | Reprobe | SetAutoprobe | SetNumVfs | ConfigureVf | SetLink | AttachDevice
        | DetachDevice)
_KINDS: dict[str, Any] = {c.kind: c for c in (BindDriver, Reprobe, SetAutoprobe, SetNumVfs,
                                              ConfigureVf, SetLink, AttachDevice, DetachDevice)}


def from_json(data: dict[str, Any]) -> Step:
    cls = _KINDS[data["kind"]]
    return cls.from_json(data) if hasattr(cls, "from_json") else cls(**data)
