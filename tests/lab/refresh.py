"""Refresh the real kernel's answers: python -m tests.lab.refresh

Boots the lab, runs the conformance sequence on the guest's /sys and writes
tests/lab/fixtures/conformance.json. Review the diff before committing it.
"""

from __future__ import annotations

import json
import sys

from tests.lab import conformance, harness


def main() -> int:
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
