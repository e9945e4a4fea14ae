"""The file that makes a directory a simulated host, and what it declares (plain JSON:
reading it imports nothing of the simulator)."""

from __future__ import annotations

import json
import os
from typing import Any

MARKER = ".pcimgr-simulated-host.json"


def is_simulated(root: str) -> bool:
    return os.path.isfile(os.path.join(root, MARKER))


def read(root: str) -> dict[str, Any]:
    with open(os.path.join(root, MARKER)) as f:
        data: dict[str, Any] = json.load(f)
    return data
