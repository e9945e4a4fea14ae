"""What every plan step shares: its journal form is its fields (`steps.from_json` reads it back)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


class Journaled:
    """Mixed into the steps' frozen dataclasses."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]
