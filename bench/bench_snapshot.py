#!/usr/bin/env python3
"""Time `pcimgr snapshot` and reads of the snapshot against reads of the host it recorded.

Usage: .venv/bin/python bench/bench_snapshot.py [--sizes 1024,4096] [--runs 7] [--dir /dev/shm]
On simulated hosts of the `scale` shape (bench_list.py's): `pcimgr snapshot FILE` (taking
it), `pcimgr --snapshot FILE list --all --json` (unpacking it and reading), and
`pcimgr --sysfs-root DIR list --all --json` (the host itself), alternating as whole
processes after one warm-up each; medians of --runs runs, the snapshot's size, and that
both reads printed the same. A real host's figures: `scripts/run bench snapshot --live`
(this machine's /sys, as root).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.bench_list import tree  # noqa: E402
from pcimgr.sim import builder  # noqa: E402

PCIMGR = os.path.join(os.path.dirname(sys.executable), "pcimgr")


def timed(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(where: list[str], label: str, work: str, runs: int) -> None:
    snap = os.path.join(work, "host.pcimgr-snapshot.tar.gz")
    take = timed([PCIMGR, *where, "snapshot", snap], runs)
    read = timed([PCIMGR, "--snapshot", snap, "list", "--all", "--json"], runs)
    live = timed([PCIMGR, *where, "list", "--all", "--json"], runs)
    same = subprocess.run([PCIMGR, "--snapshot", snap, "list", "--all", "--json"],
                          capture_output=True).stdout == subprocess.run(
        [PCIMGR, *where, "list", "--all", "--json"], capture_output=True).stdout
    print(f"{label:>14}  snapshot {take * 1000:7.0f} ms  {os.path.getsize(snap) // 1024:6} KiB"
          f"  read it {read * 1000:7.0f} ms  the host {live * 1000:7.0f} ms"
          f"  same list: {'yes' if same else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--live", action="store_true", help="this machine's /sys instead")
    args = parser.parse_args()
    work = tempfile.mkdtemp(dir=args.dir, prefix="pcimgr-bench-snapshot-")
    try:
        if args.live:
            measure([], "this host", work, args.runs)
            return
        for size in (int(s) for s in args.sizes.split(",")):
            root = os.path.join(work, f"scale{size}")
            profile = tree("scale", size)
            builder.build(root, profile)
            n = len(os.listdir(os.path.join(root, "bus/pci/devices")))
            measure(["--sysfs-root", root], f"{n} functions", work, args.runs)
            shutil.rmtree(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
