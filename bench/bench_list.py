#!/usr/bin/env python3
"""Time `pcimgr list --all --json` against `lspci -nnkD` on simulated hosts of growing size.

Usage: .venv/bin/python bench/bench_list.py [--sizes 64,1024,4096] [--runs 7]
Each size is a scale profile (root port + PF + 14 VFs per PF) built on tmpfs.
Both commands run as whole processes, as a user runs them; the figure is the
median wall time of --runs runs after one warm-up. Target (issue 2): at 4,096
functions pcimgr takes at most 0.6x the time of lspci -nnkD.
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

from pcimgr.sim import builder, profiles  # noqa: E402

VFS_PER_PF = 14


def median_time(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,1024,4096")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    pcimgr = os.path.join(os.path.dirname(sys.executable), "pcimgr")
    lspci = shutil.which("lspci")
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    print(f"{'functions':>9} {'pcimgr ms':>10} {'lspci ms':>9} {'ratio':>6} {'pcimgr us/fn':>13}")
    with tempfile.TemporaryDirectory(prefix="pcimgr-bench-", dir=base) as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            pfs = max(1, size // (VFS_PER_PF + 2))
            root = os.path.join(tmp, str(size))
            builder.build(root, profiles.scale(pfs, VFS_PER_PF))
            count = len(os.listdir(os.path.join(root, "bus/pci/devices")))
            ours = median_time([pcimgr, "--sysfs-root", root, "list", "--all", "--json"], args.runs)
            theirs = median_time([lspci, "-nnkD", "-O", f"sysfs.path={root}/bus/pci"],
                                 args.runs) if lspci else float("nan")
            print(f"{count:>9} {ours * 1e3:>10.1f} {theirs * 1e3:>9.1f} {ours / theirs:>6.2f} "
                  f"{ours / count * 1e6:>13.1f}", flush=True)
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
