#!/usr/bin/env python3
"""Time creating 7 VFs on vfio-pci on the lab's real igb, against the bare sysfs writes.

Usage: .venv/bin/python bench/bench_vfs_lab.py [--rounds 3]
Boots the QEMU lab once (tests/lab) and, inside it, creates 7 VFs of the 82576
at 01:00.0 bound to vfio-pci, three ways: `pcimgr vfs create 01:00.0 7 --driver
vfio-pci` (one process, as a user runs it); the bare writes with autoprobe off
(autoprobe 0, numvfs 7, override + drivers_probe per VF, autoprobe 1); and the
common manual way, VFs created on igbvf and then moved (override, unbind igbvf,
drivers_probe). Each round ends with `echo 0 > sriov_numvfs`. Prints the median
seconds of each. TCG guest, one vCPU.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.medians import print_table  # noqa: E402
from tests.lab import harness  # noqa: E402

SCRIPT = r"""
modprobe vfio-pci
P="$PWD/.venv/bin/pcimgr"
PF=/sys/bus/pci/devices/0000:01:00.0
now() { date +%s.%N; }
vfs() { for l in $PF/virtfn*; do basename "$(readlink $l)"; done; }
run() {
  local name=$1; shift
  local t0=$(now); "$@" >/dev/null 2>&1; local t1=$(now)
  n=0; for v in $(vfs); do [ "$(basename "$(readlink /sys/bus/pci/devices/$v/driver)")" = vfio-pci ] && n=$((n+1)); done
  echo "$name $(echo "$t1 - $t0" | bc) $n"
  echo 0 > $PF/sriov_numvfs
}
pcimgr_create() { "$P" vfs create 0000:01:00.0 7 --driver vfio-pci; }
bare_autoprobe_off() {
  echo 0 > $PF/sriov_drivers_autoprobe
  echo 7 > $PF/sriov_numvfs
  for v in $(vfs); do
    echo vfio-pci > /sys/bus/pci/devices/$v/driver_override
    echo $v > /sys/bus/pci/drivers_probe
  done
  echo 1 > $PF/sriov_drivers_autoprobe
}
igbvf_then_moved() {
  echo 7 > $PF/sriov_numvfs
  for v in $(vfs); do
    echo vfio-pci > /sys/bus/pci/devices/$v/driver_override
    echo $v > /sys/bus/pci/drivers/igbvf/unbind
    echo $v > /sys/bus/pci/drivers_probe
  done
}
for i in $(seq @ROUNDS@); do
  for way in pcimgr_create bare_autoprobe_off igbvf_then_moved; do run $way $way; done
done
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    r = harness.run(SCRIPT.replace("@ROUNDS@", str(args.rounds)), timeout=1800)
    times: dict[str, list[float]] = {}
    for line in r.output.splitlines():
        fields = line.split()
        if len(fields) != 3:
            print(line)
            continue
        name, seconds, bound = fields
        if bound != "7":
            print(f"{name}: only {bound} of 7 VFs ended on vfio-pci")
        times.setdefault(name, []).append(float(seconds))
    print_table(times, "pcimgr_create", f"7 VFs onto vfio-pci, {args.rounds} rounds", 20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
