#!/usr/bin/env python3
"""Time the libvirt holder scan (`list`'s GUEST column and JSON `holders`) with many domains.

Usage: sudo .venv/bin/python bench/bench_holders.py [--domains 100] [--runs 15]
Needs root and Debian's libvirt-daemon-system; starts libvirtd as the test suite does
(tests/libvirtd.py) when none answers, defines DOMAINS small inactive domains named
pcimgr-bench-N (every tenth with a <hostdev> in its configuration, every twentieth
an <interface type='hostdev'>), and removes them afterwards. Prints the median of
--runs in-process timings of what asking libvirt adds to a listing: importing the
binding, connecting, and pcimgr.guests.holdings.scan. Target (issue 18): <= 20 ms
with 100 domains.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests import libvirtd  # noqa: E402

PREFIX = "pcimgr-bench-"
HOSTDEV = ("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' "
           "bus='0xfe' slot='0x{slot:02x}' function='0x0'/></source></hostdev>")
INTERFACE = ("<interface type='hostdev' managed='yes'><mac address='52:54:00:00:fe:{slot:02x}'/>"
             "<source><address type='pci' domain='0x0000' bus='0xfd' slot='0x{slot:02x}' "
             "function='0x0'/></source></interface>")


def define(conn: object, n: int) -> None:
    for i in range(n):
        xml = libvirtd.domain_xml(f"{PREFIX}{i:03d}")
        extra = (HOSTDEV.format(slot=i // 10 % 32) if i % 10 == 0 else "") + \
            (INTERFACE.format(slot=i // 20 % 32) if i % 20 == 5 else "")
        conn.defineXML(xml.replace("</devices>", extra + "</devices>"))  # type: ignore[attr-defined]


def undefine(conn: object) -> None:
    for dom in conn.listAllDomains(0):  # type: ignore[attr-defined]
        if dom.name().startswith(PREFIX):
            if dom.isActive():
                dom.destroy()
            dom.undefine()


MEASURE = """
import sys, time
t0 = time.perf_counter()
from pcimgr.guests import holdings
from pcimgr.host import libvirt_adapter
import libvirt
t1 = time.perf_counter()
conn = libvirt_adapter.connect(sys.argv[1])
t2 = time.perf_counter()
found = holdings.scan(conn)
t3 = time.perf_counter()
print(t3 - t0, sum(len(h) for h in found.values()), t1 - t0, t2 - t1, t3 - t2)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", type=int, default=100)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    why = libvirtd.unavailable()
    if why:
        sys.exit(f"cannot run: {why}")
    started = libvirtd.start()
    import libvirt
    conn = libvirt.open(libvirtd.URI)
    try:
        undefine(conn)
        define(conn, args.domains)
        total = len(conn.listAllDomains(0))
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        cmd = [sys.executable, "-c", MEASURE, libvirtd.URI]
        env = dict(os.environ, PYTHONPATH=repo)
        runs: list[list[float]] = []
        held = ""
        for _ in range(args.runs + 1):  # a warm-up first
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env,
                                 cwd=repo).stdout.split()
            runs.append([float(x) for x in (out[0], *out[2:])])
            held = out[1]
        whole, imports, connect, scan = (statistics.median(r[i] for r in runs[1:]) * 1e3
                                         for i in range(4))
        print(f"holder scan, {total} domains ({args.domains} defined here), {held} holdings, "
              f"medians of {args.runs} fresh processes: {whole:.1f} ms in all = imports "
              f"{imports:.1f} (the binding, holdings) + connect {connect:.1f} + scan {scan:.1f} "
              "(target: scan <= 20)")
    finally:
        undefine(conn)
        conn.close()
        libvirtd.stop(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
