#!/usr/bin/env python3
"""Time detaching the lab's e1000 pair on the real kernel, and the way back, against other tools.

Usage: .venv/bin/python bench/bench_detach_lab.py [--rounds 5] [--profile] [--before REV]...
Boots the QEMU lab once (tests/lab) and, inside it, moves both e1000 functions
(one IOMMU group) to vfio-pci, and back, with: pcimgr (`detach 02:01.0 --group`,
then `rebind A B`: one process each, as a user runs them), the bare sysfs writes
from a shell, driverctl (`set-override` x2, `unset-override` x2) and
dpdk-devbind.py (`-b vfio-pci A B`, `-b e1000 A B`). The detach and the way back
are timed separately; `python -c pass` and `pcimgr --version` are timed in the
same boot, as the anchors of what any Python process costs there.

Before booting, pcimgr's modules are compiled (`python -m compileall -q pcimgr`): the
guest sees the checkout read-only under a tmpfs overlay, so without __pycache__ on
the host the first start of every boot compiles them. driverctl and dpdk-devbind.py
are Debian's (`apt-get download driverctl dpdk`, unpacked into the lab cache, never
installed). With --profile, the same boot also prints where one detach's time goes: the
layers of a start (`python -c pass`, `import click`, the CLI, the modules a change adds),
a detach compiling every module against one with compiled modules (copies in the guest's
tmpfs: reads over 9p would blur the difference), `-X importtime` (the
largest imports), cProfile (the largest functions) and `strace` (system calls, processes
started, the writes and fsyncs in time), each on a detach of its own. With --before REV
(once or more), pcimgr as it was at REV (`git archive`, compiled, run with PYTHONPATH) is
timed in the same rounds as "at-REV": before and after compared inside one boot. Every other round
runs the tools in reversed order. TCG guest, one vCPU.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.lab import harness  # noqa: E402

CHECKOUT = Path(__file__).resolve().parent.parent
A, B = "0000:02:01.0", "0000:02:02.0"
TOOLS = {"driverctl": "usr/sbin/driverctl", "dpdk": "usr/bin/dpdk-devbind.py"}

SCRIPT = r"""
modprobe vfio-pci
export PATH="@TOOLS@/usr/sbin:@TOOLS@/usr/bin:$PATH"
PY="$PWD/.venv/bin/python"
P="$PWD/.venv/bin/pcimgr"
run() {  # name, commands...: prints "name seconds" ($EPOCHREALTIME: no process to read a clock)
  local name=$1; shift
  local t0=$EPOCHREALTIME; "$@" >/dev/null 2>&1; local rc=$?; local t1=$EPOCHREALTIME
  echo "$name $(echo "$t1 - $t0" | bc) $rc"
}
on() { for d in @A@ @B@; do [ "$(basename "$(readlink /sys/bus/pci/devices/$d/driver)")" = "$1" ] || echo "NOT ON $1 after $2: $d"; done; }
bare_to() {  # $1 = override value ('' clears it)
  for d in @A@ @B@; do
    if [ -n "$1" ]; then echo "$1" > /sys/bus/pci/devices/$d/driver_override
    else echo > /sys/bus/pci/devices/$d/driver_override; fi
    cur=$(readlink /sys/bus/pci/devices/$d/driver) && echo $d > /sys/bus/pci/drivers/${cur##*/}/unbind
    echo $d > /sys/bus/pci/drivers_probe
  done
}
pcimgr_detach() { "$P" detach @A@ --group; }
pcimgr_back() { "$P" rebind @A@ @B@; }
@BEFORE@
TOOLS="@OLDER@pcimgr bare driverctl devbind"
bare_detach() { bare_to vfio-pci; }
bare_back() { bare_to ''; }
driverctl_detach() { driverctl set-override @A@ vfio-pci && driverctl set-override @B@ vfio-pci; }
driverctl_back() { driverctl unset-override @A@ && driverctl unset-override @B@; }
devbind_detach() { dpdk-devbind.py -b vfio-pci @A@ @B@; }
devbind_back() { dpdk-devbind.py -b e1000 @A@ @B@; }
# warm-up: one of each, untimed (the page cache of the 9p view)
"$PY" -c pass; "$P" --version >/dev/null; for t in $TOOLS; do ${t}_detach >/dev/null 2>&1; ${t}_back >/dev/null 2>&1; done
on e1000 warm-up
REVERSED=$(echo $TOOLS | tr ' ' '\n' | tac | tr '\n' ' ')
for i in $(seq @ROUNDS@); do
  run python_c_pass "$PY" -c pass
  run pcimgr_version "$P" --version
  order=$TOOLS; [ $((i % 2)) = 0 ] && order=$REVERSED  # no tool always runs first
  for t in $order; do
    run ${t}_detach ${t}_detach; on vfio-pci "$t detach"
    run ${t}_back ${t}_back; on e1000 "$t back"
  done
done
if [ -n "@PROFILE@" ]; then
  med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  ms() { local t0=$EPOCHREALTIME; "$@" >/dev/null 2>&1; local t1=$EPOCHREALTIME; echo "($t1 - $t0) * 1000 / 1" | bc; }
  echo "== the layers of a start (median ms of 5)"
  for what in "pass" "import click" "import pcimgr.cli.app" "import pcimgr.cli.app, pcimgr.cli.commands.drivers, pcimgr.drivers.planner, pcimgr.host.linux, pcimgr.host.netlink, pcimgr.persist.definitions, pcimgr.cli.render, pcimgr.plans.history, pcimgr.plans.lock, pcimgr.sim.marker"; do
    echo "$(for i in 1 2 3 4 5; do ms "$PY" -c "$what"; done | med) python -c '$what'"
  done
  echo "$(for i in 1 2 3 4 5; do ms "$P" --version; done | med) pcimgr --version"
  echo "== detach from copies in the guest's tmpfs: compiled, and compiling every module (3 runs)"
  for d in pyc nopyc; do rm -rf /tmp/$d && mkdir /tmp/$d && cp -a pcimgr /tmp/$d/; done  # -a: a .pyc holds its source's mtime
  find /tmp/nopyc -name __pycache__ -prune -exec rm -rf {} +
  for d in pyc nopyc pyc nopyc; do  # warm-up: both copies read once
    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/tmp/$d "$P" detach @A@ --group >/dev/null; "$P" rebind @A@ @B@ >/dev/null
  done
  for i in 1 2 3; do
    c=$(PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/tmp/pyc ms "$P" detach @A@ --group); "$P" rebind @A@ @B@ >/dev/null
    n=$(PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/tmp/nopyc ms "$P" detach @A@ --group); "$P" rebind @A@ @B@ >/dev/null
    echo "compiled $c, compiling $n"
  done
  echo "== -X importtime, detach (cumulative us, largest 25)"
  "$PY" -X importtime -m pcimgr detach @A@ --group 2>/tmp/imp >/dev/null
  sort -t'|' -k2 -n -r /tmp/imp | head -25
  echo "imported modules: $(grep -c 'import time:' /tmp/imp)"
  "$P" rebind @A@ @B@ >/dev/null
  echo "== cProfile, detach (cumulative, largest 35)"
  "$PY" -m cProfile -o /tmp/prof -m pcimgr detach @A@ --group >/dev/null
  "$PY" -c "import pstats; pstats.Stats('/tmp/prof').sort_stats('cumulative').print_stats(35)" | sed -n '/ncalls/,$p'
  "$P" rebind @A@ @B@ >/dev/null
  if command -v strace >/dev/null; then
    echo "== strace -f -c, detach"
    strace -f -c -o /tmp/st "$P" detach @A@ --group >/dev/null; head -30 /tmp/st
    echo "== processes started by detach"
    strace -f -e trace=execve -o /tmp/ex "$P" rebind @A@ @B@ >/dev/null
    strace -f -e trace=execve -o /tmp/ex "$P" detach @A@ --group >/dev/null; grep -o 'execve("[^"]*"' /tmp/ex
    echo "== strace -r of detach: the writes and waits"
    "$P" rebind @A@ @B@ >/dev/null
    strace -f -tt -e trace=execve,write,fsync,fdatasync,nanosleep,clock_nanosleep,poll,select,pselect6,wait4,openat -o /tmp/tt "$P" detach @A@ --group >/dev/null
    grep -E 'execve|fsync|sleep|poll|select|wait4|/sys/bus/pci/(drivers_probe|drivers/[^/]*/(un)?bind)|driver_override|journal|exited' /tmp/tt | grep -v ENOENT | head -80
    "$P" rebind @A@ @B@ >/dev/null
  fi
  on e1000 profile
fi
"""


def fetch_tools() -> Path:
    """driverctl and dpdk-devbind.py unpacked from Debian's packages into the lab cache."""
    root = harness.CACHE / "tools"
    if all((root / rel).exists() for rel in TOOLS.values()):
        return root
    debs = harness.CACHE / "deb"
    debs.mkdir(parents=True, exist_ok=True)
    for package in TOOLS:
        if not list(debs.glob(f"{package}_*.deb")):
            subprocess.run(["apt-get", "download", "-q", package], cwd=debs, check=True,
                           capture_output=True)
        subprocess.run(["dpkg-deb", "-x", str(next(debs.glob(f"{package}_*.deb"))), str(root)],
                       check=True)
    return root


def compile_modules(where: Path) -> None:
    """__pycache__ for every module of pcimgr, so that the guest never compiles one."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(where / "pcimgr")],
                   check=True, env={k: v for k, v in os.environ.items()
                                    if k != "PYTHONDONTWRITEBYTECODE"})


def export(rev: str) -> Path:
    """pcimgr's package as it was at REV, compiled, in the lab cache (the guest sees it)."""
    commit = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "--verify", rev],
                            capture_output=True, text=True, check=True).stdout.strip()
    where = harness.CACHE / f"pcimgr-{commit[:12]}"
    if not (where / "pcimgr").exists():
        where.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(CHECKOUT), "archive", commit, "pcimgr"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    compile_modules(where)
    return where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true",
                    help="also print -X importtime, cProfile and strace of one detach")
    ap.add_argument("--before", metavar="REV", action="append", default=[],
                    help="also time pcimgr as it was at this git revision, in the same boot "
                         "(repeatable)")
    args = ap.parse_args()
    compile_modules(CHECKOUT)
    older = [("at-" + re.sub(r"[^A-Za-z0-9]", "_", rev), export(rev)) for rev in args.before]
    before = "".join(f'{name}_detach() {{ PYTHONPATH="{where}" "$P" detach @A@ --group; }}\n'
                     f'{name}_back() {{ PYTHONPATH="{where}" "$P" rebind @A@ @B@; }}\n'
                     for name, where in older)
    script = (SCRIPT.replace("@BEFORE@", before).replace("@A@", A).replace("@B@", B)
              .replace("@ROUNDS@", str(args.rounds))
              .replace("@TOOLS@", str(fetch_tools()))
              .replace("@PROFILE@", "1" if args.profile else "")
              .replace("@OLDER@", "".join(f"{name} " for name, _ in older)))
    r = harness.run(script, timeout=3600)
    times: dict[str, list[float]] = {}
    for line in r.output.splitlines():
        words = line.split()
        if len(words) == 3 and words[2] == "0":
            try:
                times.setdefault(words[0], []).append(float(words[1]))
                continue
            except ValueError:
                pass
        print(line)
    print_table(times, args.rounds, [name for name, _ in older])
    return 0


def print_table(times: dict[str, list[float]], rounds: int, older: list[str]) -> None:
    def median(name: str) -> float | None:
        return statistics.median(times[name]) if times.get(name) else None

    def spread(name: str) -> str:
        values = times.get(name)
        return f"{min(values) * 1000:>6.0f}-{max(values) * 1000:<6.0f}" if values else " " * 13

    print(f"\nmedian ms of {rounds} rounds, one boot (TCG guest, one vCPU); min-max after it")
    for anchor in ("python_c_pass", "pcimgr_version"):
        m = median(anchor)
        print(f"{anchor:<16}{m * 1000:>9.0f} {spread(anchor)}" if m is not None
              else f"{anchor:<16}{'failed':>9}")
    base = median("pcimgr_detach")
    print(f"{'tool':<16}{'detach':>9}{'':14}{'vs pcimgr':>10}{'back':>9}")
    for tool in (*older, "pcimgr", "bare", "driverctl", "devbind"):
        d, b = median(f"{tool}_detach"), median(f"{tool}_back")
        ratio = f"{d / base:>10.2f}x" if d is not None and base else f"{'':>11}"
        print(f"{tool:<16}" + (f"{d * 1000:>9.0f}" if d is not None else f"{'failed':>9}")
              + f" {spread(f'{tool}_detach')}" + ratio
              + (f"{b * 1000:>9.0f}" if b is not None else f"{'failed':>9}")
              + f" {spread(f'{tool}_back')}")


if __name__ == "__main__":
    sys.exit(main())
