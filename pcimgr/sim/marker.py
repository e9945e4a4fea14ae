"""The file that makes a directory a simulated host, and what it declares (plain JSON:
reading it imports nothing of the simulator)."""

from __future__ import annotations

import json
import os
from typing import Any

from pcimgr.core.errors import Damaged

MARKER = ".pcimgr-simulated-host.json"
# present only while the simulated kernel reacts to a write, or after a kill cut it short
# (sim/undo.py): checked by every opening of the tree, so without importing the simulator
UNDO_DIR = ".pcimgr-sim-undo"


def is_simulated(root: str) -> bool:
    return os.path.isfile(os.path.join(root, MARKER))


def read(root: str) -> dict[str, Any]:
    path = os.path.join(root, MARKER)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise Damaged(f"{path} is not a simulated host's marker ({e}); rebuild the host with "
                      "`pcimgr sim create`") from None
    if not isinstance(data, dict) or not isinstance(data.get("host", {}), dict) \
            or not isinstance(data.get("devices", {}), dict):
        raise Damaged(f"{path} is not a simulated host's marker (not the shape `pcimgr sim "
                      "create` writes); rebuild the host with `pcimgr sim create`")
    return data
