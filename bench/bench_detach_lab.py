#!/usr/bin/env python3
"""Time detach+rebind of the lab's e1000 pair on the real kernel, against other tools.

Usage: .venv/bin/python bench/bench_detach_lab.py [--rounds 5]
Boots the QEMU lab once (tests/lab) and, inside it, moves both e1000 functions
(one IOMMU group) to vfio-pci and back with: pcimgr (`detach --group` then
`rebind`, two processes as a user runs them), the bare sysfs writes from a
shell, driverctl (set-override / unset-override), and dpdk-devbind.py (-b).
Prints the median seconds per round trip of each. TCG guest, one vCPU.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.medians import print_table  # noqa: E402
from tests.lab import harness  # noqa: E402

A, B = "0000:02:01.0", "0000:02:02.0"
SCRIPT = r"""
modprobe vfio-pci
P="$PWD/.venv/bin/pcimgr"
now() { date +%s.%N; }
bare_to() {  # $1 = driver, $2 = override value
  for d in @A@ @B@; do
    echo "$2" > /sys/bus/pci/devices/$d/driver_override
    cur=$(basename "$(readlink /sys/bus/pci/devices/$d/driver)")
    echo $d > /sys/bus/pci/drivers/$cur/unbind
    echo $d > /sys/bus/pci/drivers_probe
  done
}
run() {  # name, commands...
  local name=$1; shift
  local t0=$(now); "$@" >/dev/null 2>&1; local t1=$(now)
  echo "$name $(echo "$t1 - $t0" | bc)"
}
pcimgr_trip() { "$P" detach @A@ --group && "$P" rebind @A@ @B@; }
bare_trip() { bare_to vfio-pci vfio-pci; bare_to e1000 ''; for d in @A@ @B@; do echo > /sys/bus/pci/devices/$d/driver_override; done; }
driverctl_trip() { driverctl set-override @A@ vfio-pci && driverctl set-override @B@ vfio-pci && driverctl unset-override @A@ && driverctl unset-override @B@; }
devbind_trip() { dpdk-devbind.py -b vfio-pci @A@ @B@ && dpdk-devbind.py -b e1000 @A@ @B@; }
check() { for d in @A@ @B@; do [ "$(basename "$(readlink /sys/bus/pci/devices/$d/driver)")" = e1000 ] || echo "NOT RESTORED $1 $d"; done; }
for i in $(seq @ROUNDS@); do
  for tool in pcimgr bare driverctl devbind; do run $tool ${tool}_trip; check $tool; done
done
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    script = SCRIPT.replace("@A@", A).replace("@B@", B).replace("@ROUNDS@", str(args.rounds))
    r = harness.run(script, timeout=1800)
    times: dict[str, list[float]] = {}
    for line in r.output.splitlines():
        if line.startswith("NOT RESTORED"):
            print(line)
            continue
        name, _, value = line.partition(" ")
        try:
            times.setdefault(name, []).append(float(value))
        except ValueError:
            print(line)
    print_table(times, "pcimgr", f"round trip of the e1000 pair, {args.rounds} rounds", 12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
