#!/usr/bin/env python3
"""Time the mdev read commands as whole processes on the simulated 'mdev' host.

Usage: .venv/bin/python bench/bench_mdev.py [--mdevs 12] [--runs 15] [--dir /dev/shm]
Builds the host, creates --mdevs mtty mdevs (mtty-2, so 12 take every port) and defines
them, then times `mdev types --json`, `mdev list --json`, `mdev list --defined --json`
and, for scale, `python -c pass` with the same interpreter: medians of --runs runs after
one warm-up each. mdevctl itself reads only the real /sys; the lab guest has the
comparison (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.bench_snapshot import PCIMGR, timed  # noqa: E402
from pcimgr.sim import builder, profiles  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mdevs", type=int, default=12)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--dir", default="/dev/shm")
    args = parser.parse_args()
    work = tempfile.mkdtemp(dir=args.dir, prefix="bench-mdev-")
    try:
        root = os.path.join(work, "sys")
        builder.build(root, profiles.get("mdev"))
        where = ["--sysfs-root", root]
        for n in range(args.mdevs):
            uuid = f"be4c0000-0000-4000-8000-{n:012x}"
            for argv in (["mdev", "create", "mtty", "mtty-2", "--uuid", uuid],
                         ["mdev", "define", "--uuid", uuid, "--auto"]):
                subprocess.run([PCIMGR, *where, *argv], check=True, stdout=subprocess.DEVNULL)
        rows = [("python -c pass", [sys.executable, "-c", "pass"]),
                ("mdev types --json", [PCIMGR, *where, "mdev", "types", "--json"]),
                ("mdev list --json", [PCIMGR, *where, "mdev", "list", "--json"]),
                ("mdev list --defined --json",
                 [PCIMGR, *where, "mdev", "list", "--defined", "--json"])]
        print(f"{args.mdevs} mdevs on mtty, medians of {args.runs} runs")
        for label, cmd in rows:
            print(f"{label:>28}  {timed(cmd, args.runs) * 1000:7.1f} ms")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
