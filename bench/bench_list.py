#!/usr/bin/env python3
"""Time `pcimgr list --all --json` against `lspci -nnkD` on simulated hosts, side by side.

Usage: .venv/bin/python bench/bench_list.py [--trees scale,mixed] [--sizes 4096]
                                            [--runs 15] [--dir /dev/shm]
Trees: `scale` is `pcimgr sim create --profile scale:PFSx15` (a root port, an igb PF and
15 VFs each); `mixed` the same shape with the PFs cycling through five NIC models (Intel
igb, ixgbe and i40e, Mellanox ConnectX-5, Broadcom NetXtreme-E), a third of them
without VFs. --sizes is the number of functions wanted
(rounded to whole PFs); --dir where the trees are built (tmpfs by default; give a disk
directory to measure on disk). Both commands run as whole processes, alternating
(pcimgr, lspci, pcimgr, ...) after one warm-up each, so that load on the machine hits
both alike; the figures are medians of --runs runs and their ratio.
--before REV also times pcimgr as it was at REV (git archive, compiled, run through
PYTHONPATH) in the same alternation, so before and after share the machine's moment.
Targets (issue 18): pcimgr <= 1.0x lspci at 4,096 functions; under 1 s at 16,384.
"""

from __future__ import annotations

import argparse
import dataclasses
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

VFS_PER_PF = 15
# (vendor, PF device, VF device, PF driver, VF driver, subsystem)
MODELS = (("8086", "10c9", "10ca", "igb", "igbvf", ("8086", "a03c")),
          ("8086", "10fb", "10ed", "ixgbe", "ixgbevf", ("8086", "000c")),
          ("8086", "1572", "154c", "i40e", "iavf", ("8086", "0000")),
          ("15b3", "1017", "1018", "mlx5_core", "mlx5_core", ("15b3", "0020")),
          ("14e4", "16d7", "16dc", "bnxt_en", "bnxt_en", ("14e4", "1402")))


def mixed(pfs: int) -> profiles.Profile:
    """The scale shape with the NIC models cycling and every third PF without VFs."""
    base = profiles.scale(pfs, VFS_PER_PF)
    devices = []
    i = 0
    for spec in base.devices:
        if spec.sriov is None:
            devices.append(spec)
            continue
        vendor, device, vf_device, driver, vf_driver, subsystem = MODELS[i % len(MODELS)]
        numvfs = 0 if i % 3 == 2 else VFS_PER_PF
        sriov = dataclasses.replace(spec.sriov, vf_device=vf_device, vf_driver=vf_driver,
                                    numvfs=numvfs, configurable_by=(driver,))
        devices.append(dataclasses.replace(spec, vendor=vendor, device=device, driver=driver,
                                           subsystem=subsystem, sriov=sriov))
        i += 1
    drivers = tuple(sorted({m[3] for m in MODELS} | {m[4] for m in MODELS})) \
        + ("pcieport",) + profiles.STUBS
    return profiles.Profile(f"mixed:{pfs}", "mixed NIC models", tuple(devices), drivers)


def tree(kind: str, functions: int) -> profiles.Profile:
    if kind == "scale":
        return profiles.scale(max(1, functions // (VFS_PER_PF + 2)), VFS_PER_PF)
    # a third of the PFs have no VFs: more PFs for the same number of functions
    per_pf = (2 * (VFS_PER_PF + 2) + 2) / 3
    return mixed(max(1, round(functions / per_pf)))


def alternate(commands: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in commands}
    for cmd in commands.values():  # warm-up: page cache, dentries
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    for _ in range(runs):
        for name, cmd in commands.items():
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t)
    return times


# what the console script does (the same start-up for the revision under PYTHONPATH)
RUN = "import sys; from pcimgr.__main__ import run; sys.argv[0] = 'pcimgr'; sys.exit(run())"


def export(rev: str, tmp: str) -> str:
    """pcimgr's package at rev, compiled, in tmp/before (for PYTHONPATH)."""
    out = os.path.join(tmp, "before")
    os.mkdir(out)
    archive = subprocess.run(["git", "-C", os.path.dirname(HERE), "archive", rev, "pcimgr"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", out], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", out], check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", default="scale,mixed")
    ap.add_argument("--sizes", default="4096")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--dir", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    ap.add_argument("--before", metavar="REV", help="also time pcimgr as it was at REV")
    args = ap.parse_args()
    pcimgr = os.path.join(os.path.dirname(sys.executable), "pcimgr")
    lspci = shutil.which("lspci")
    if lspci is None:
        sys.exit("lspci is not installed (apt-get install pciutils)")
    before_head = f" {'before ms':>10} {'ratio':>6}" if args.before else ""
    print(f"{'tree':>6} {'functions':>9} {'pcimgr ms':>10} {'lspci ms':>9} {'ratio':>6} "
          f"{'pcimgr us/fn':>13}{before_head}   (medians of {args.runs} alternating runs)")
    with tempfile.TemporaryDirectory(prefix="pcimgr-bench-", dir=args.dir) as tmp:
        old = export(args.before, tmp) if args.before else None
        for kind in args.trees.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                root = os.path.join(tmp, f"{kind}-{size}")
                builder.build(root, tree(kind, size))
                count = len(os.listdir(os.path.join(root, "bus/pci/devices")))
                args_ = ["--sysfs-root", root, "list", "--all", "--json"]
                commands = {"pcimgr": [pcimgr, *args_],
                            "lspci": [lspci, "-nnkD", "-O", f"sysfs.path={root}/bus/pci"]}
                if old is not None:
                    # -P: not the current directory first (a checkout's pcimgr would win)
                    commands["before"] = ["env", f"PYTHONPATH={old}", sys.executable, "-P",
                                          "-c", RUN, *args_]
                times = alternate(commands, args.runs)
                ours, theirs = (statistics.median(times[n]) for n in ("pcimgr", "lspci"))
                then = ""
                if old is not None:
                    before = statistics.median(times["before"])
                    then = f" {before * 1e3:>10.1f} {before / theirs:>6.2f}"
                print(f"{kind:>6} {count:>9} {ours * 1e3:>10.1f} {theirs * 1e3:>9.1f} "
                      f"{ours / theirs:>6.2f} {ours / count * 1e6:>13.1f}{then}", flush=True)
                shutil.rmtree(root)


if __name__ == "__main__":
    main()
