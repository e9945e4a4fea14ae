#!/usr/bin/env python3
"""Time pcimgr's libvirt hook as libvirt runs it, on the simulated 'desktop' host.

Usage: .venv/bin/python bench/bench_hook.py [--runs 15] [--dir /dev/shm]
libvirt runs every executable in qemu.d/ at every event of every guest. The installed hook
is sh so that the events and guests pcimgr has nothing to do with cost a fork: timed for a
guest without a profile, an event pcimgr ignores (started), and, for scale, the same
ignored event handed to Python (`pcimgr hook qemu`, what a Python hook would cost every
time), `sh -c :`, and a whole prepare + release of the single-GPU profile (medians of
--runs runs after one warm-up each).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.bench_snapshot import PCIMGR, timed  # noqa: E402
from pcimgr.sim import builder, profiles  # noqa: E402

XML = "<domain type='kvm'><name>{vm}</name></domain>"


def hook_run(script: str, vm: str, op: str, sub: str) -> list[str]:
    return ["sh", "-c", f"echo \"{XML.format(vm=vm)}\" | sh {script} {vm} {op} {sub} -"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--dir", default="/dev/shm")
    args = parser.parse_args()
    work = tempfile.mkdtemp(dir=args.dir, prefix="bench-hook-")
    try:
        root = os.path.join(work, "sys")
        builder.build(root, profiles.get("desktop"))
        where = ["--sysfs-root", root]
        for argv in (["handoff", "define", "vm1", "03:00.0", "--group", "--framebuffer",
                      "--stop-display-manager"], ["hook", "install", "--program", PCIMGR]):
            subprocess.run([PCIMGR, *where, *argv], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        script = os.path.join(root, "etc/libvirt/hooks/qemu.d/pcimgr")
        rows = [("sh -c :", ["sh", "-c", ":"]),
                ("hook, guest without a profile", hook_run(script, "other", "prepare", "begin")),
                ("hook, vm1 started (ignored)", hook_run(script, "vm1", "started", "begin")),
                ("pcimgr hook qemu vm1 started", ["sh", "-c", f"echo | {PCIMGR} {' '.join(where)} "
                                                  "hook qemu vm1 started begin -"])]
        print(f"pcimgr's libvirt hook on the simulated desktop, medians of {args.runs} runs")
        for label, cmd in rows:
            print(f"{label:>32}  {timed(cmd, args.runs) * 1000:7.1f} ms")
        take = hook_run(script, "vm1", "prepare", "begin")
        give = hook_run(script, "vm1", "release", "end")
        spans = []
        for _ in range(max(3, args.runs // 3)):
            for cmd in (take, give):
                started = time.perf_counter()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                spans.append(time.perf_counter() - started)
        spans.sort()
        print(f"{'prepare or release (4 steps)':>32}  {spans[len(spans) // 2] * 1000:7.1f} ms")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
