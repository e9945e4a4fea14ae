#!/usr/bin/env python3
"""Time `pcimgr list` on this host while a real libvirtd holds many domains (issue 29).

Usage: sudo .venv/bin/python bench/bench_list_libvirt.py [--domains 100] [--running 20]
                                     [--hostdevs 0] [--runs 21] [--before REV]
Needs root and Debian's libvirt-daemon-system; starts libvirtd as the test suite does
(tests/libvirtd.py) when none answers, defines DOMAINS small domains named pcimgr-bench-N
(the first HOSTDEVS with a <hostdev> in their configuration, as a guest holding a VF has:
no VFIO here, so they stay stopped), starts RUNNING of the others (TCG, no OS), and
removes them afterwards. Times whole processes in alternation, medians of --runs after a
warm-up: `python -c 'import click'` (the floor of any click tool), `pcimgr --version`,
`pcimgr list` and `pcimgr list --all --json`, `lspci -nnk`, and with --before REV
pcimgr's `list` as it was at REV (git archive, compiled, through PYTHONPATH).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.bench_holders import HOSTDEV, PREFIX, undefine  # noqa: E402
from bench.bench_list import RUN, alternate, export  # noqa: E402
from tests import libvirtd  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", type=int, default=100)
    ap.add_argument("--running", type=int, default=20)
    ap.add_argument("--hostdevs", type=int, default=0)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--before", metavar="REV", help="also time pcimgr as it was at REV")
    args = ap.parse_args()
    why = libvirtd.unavailable()
    if why:
        sys.exit(f"cannot run: {why}")
    started = libvirtd.start()
    import libvirt
    conn = libvirt.open(libvirtd.URI)
    pcimgr = os.path.join(os.path.dirname(sys.executable), "pcimgr")
    try:
        undefine(conn)
        for i in range(args.domains):
            xml = libvirtd.domain_xml(f"{PREFIX}{i:03d}")
            extra = HOSTDEV.format(slot=i % 32) if i < args.hostdevs else ""
            conn.defineXML(xml.replace("</devices>", extra + "</devices>"))
        plain = [d for d in conn.listAllDomains(0) if d.name().startswith(PREFIX)
                 and "hostdev" not in d.XMLDesc(0)]
        for dom in plain[:args.running]:
            dom.create()
        running = sum(1 for d in conn.listAllDomains(0) if d.isActive())
        env = {"LIBVIRT_DEFAULT_URI": libvirtd.URI}
        commands = {
            "python -c 'import click'": [sys.executable, "-c", "import click"],
            "pcimgr --version": [pcimgr, "--version"],
            "pcimgr list": ["env", *(f"{k}={v}" for k, v in env.items()), pcimgr, "list"],
            "pcimgr list --all --json": ["env", *(f"{k}={v}" for k, v in env.items()),
                                         pcimgr, "list", "--all", "--json"],
            "lspci -nnk": [shutil.which("lspci") or "lspci", "-nnk"],
        }
        with tempfile.TemporaryDirectory(prefix="pcimgr-bench-") as tmp:
            if args.before:
                old = export(args.before, tmp)
                commands[f"pcimgr list at {args.before}"] = [
                    "env", f"PYTHONPATH={old}", *(f"{k}={v}" for k, v in env.items()),
                    sys.executable, "-P", "-c", RUN, "list"]
            times = alternate(commands, args.runs)
        floor = statistics.median(times["python -c 'import click'"])
        print(f"{len(conn.listAllDomains(0))} domains ({running} running, {args.hostdevs} "
              "naming a host device), this host's /sys; "
              f"medians of {args.runs} alternating runs")
        for name, spans in times.items():
            ms = statistics.median(spans) * 1e3
            print(f"{name:>36}  {ms:7.1f} ms  {ms - floor * 1e3:+7.1f} ms above the floor")
    finally:
        undefine(conn)
        conn.close()
        libvirtd.stop(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
