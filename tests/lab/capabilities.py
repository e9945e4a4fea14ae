"""What the kernel shows of each function's capabilities: reset methods, the link files
and the configuration space (as pcimgr's core/configspace.py parses it). Recorded in the
lab into fixtures/capabilities.json; tests/test_conformance.py holds the simulated `lab`
profile to it, tests/lab/test_lab_insight.py checks it is still what the kernel says.

    python -m tests.lab.capabilities SYSFS_ROOT    # print the record of a tree as JSON
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from pcimgr.core import configspace

FIXTURE = Path(__file__).parent / "fixtures" / "capabilities.json"
LINK = ("current_link_speed", "current_link_width", "max_link_speed", "max_link_width")


def record(sysfs_root: str = "/sys") -> dict[str, Any]:
    devices = Path(sysfs_root) / "bus/pci/devices"
    found = {}
    for name in sorted(os.listdir(devices)):
        d = devices / name
        entry: dict[str, Any] = {"reset_method": _read(d / "reset_method")}
        entry.update({a: _read(d / a) for a in LINK})
        cs = configspace.parse((d / "config").read_bytes())
        entry.update(port_type=cs.port_type, flr=cs.flr, pm_soft_reset=cs.pm_soft_reset,
                     acs=[cs.acs.capability, cs.acs.control] if cs.acs else None,
                     parent=os.path.basename(os.path.dirname(os.path.realpath(d))))
        found[name] = entry
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


if __name__ == "__main__":
    json.dump(record(sys.argv[1] if len(sys.argv) > 1 else "/sys"), sys.stdout, indent=1)
