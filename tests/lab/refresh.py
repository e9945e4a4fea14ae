"""Refresh the real kernel's answers: python -m tests.lab.refresh [snapshot | display]

Boots the lab, runs the conformance sequence on the guest's /sys and writes
tests/lab/fixtures/conformance.json; with `snapshot`, takes `pcimgr snapshot` of the
guest instead and writes tests/lab/fixtures/lab-guest.pcimgr-snapshot.tar.gz (the
readers are held to it by tests/test_snapshot_fixture.py); with `display`, boots the
desktop lab and writes tests/lab/fixtures/display.json (tests/lab/display.py). Review the
diff before committing it.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from tests.lab import conformance, display, harness

SNAPSHOT = Path(__file__).parent / "fixtures/lab-guest.pcimgr-snapshot.tar.gz"


def snapshot() -> int:
    r = harness.run(f"{sys.executable} -m pcimgr snapshot - | base64 -w0 > /run/lab/guest.b64",
                    collect=("guest.b64",))
    if r.status != 0 or not r.files.get("guest.b64"):
        print(r.output, file=sys.stderr)
        return 1
    SNAPSHOT.write_bytes(base64.b64decode(r.files["guest.b64"]))
    print(f"wrote {SNAPSHOT} ({SNAPSHOT.stat().st_size // 1024} KiB, {r.seconds:.0f} s)")
    return 0


def display_facts() -> int:
    r = harness.run(f"{sys.executable} -m tests.lab.display /run/lab/display.json",
                    collect=("display.json",), boot="desktop")
    if r.status != 0 or "display.json" not in r.files:
        print(r.output, file=sys.stderr)
        return 1
    display.FIXTURE.write_text(r.files["display.json"])
    print(f"wrote {display.FIXTURE} ({r.seconds:.0f} s)")
    return 0


def main() -> int:
    if sys.argv[1:] == ["snapshot"]:
        return snapshot()
    if sys.argv[1:] == ["display"]:
        return display_facts()
    r = harness.run(f"{sys.executable} -m tests.lab.conformance record /run/lab/conformance.json",
                    collect=("conformance.json",))
    if r.status != 0 or "conformance.json" not in r.files:
        print(r.output, file=sys.stderr)
        return 1
    data = json.loads(r.files["conformance.json"])
    conformance.FIXTURE.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {conformance.FIXTURE} ({len(data['observations'])} observations, "
          f"kernel {data['kernel']}, {r.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
