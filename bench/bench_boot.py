#!/usr/bin/env python3
"""Boot through udev against one `pcimgr apply`: PFs with defined VFs reaching their state.

Usage: .venv/bin/python bench/bench_boot.py [--pfs 4] [--vfs 16] [--runs 5] [--dir /dev/shm]
Builds a simulated host (`scale:PFSx0`: igb-like PFs bound to igb, no VFs yet) and defines
on each PF --vfs VFS on vfio-pci with settings on every VF (MAC, VLAN with a priority,
spoofchk off, trust on). Then times, alternating, after one warm-up each:
  apply  one `pcimgr apply` of those definitions;
  udev   what the generated rules start when the PFs appear and their driver binds: the
         rules are walked for each PF's add (no driver yet) and bind (igb) event, and every
         command they start (RUN without systemd; with --systemd the template unit's
         ExecStart for each unit wanted or started) runs at once, as udev's parallel
         workers start them, until all exit.
Before each run the tree is put back as it was built (no VFs, empty history); after it,
every process must have exited 0 and `pcimgr status` must say every definition is ok.
Prints the medians and udev/apply. Target (issue 18): udev <= 1.2x apply at 4 PFs x 16 VFs.
To time another checkout's code, put it first on PYTHONPATH (`PYTHONPATH=/tmp/before`).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.dirname(HERE))

from pcimgr.persist import definitions, udev  # noqa: E402
from pcimgr.sim import builder, profiles  # noqa: E402


def define(pcimgr: list[str], root: str, pfs: list[str], vfs: int) -> None:
    """`define` for the count and VF 0 (its checks run), then the same settings for every
    other VF written into the definition as define writes it (68 processes take ~10 s)."""
    cfg = os.path.join(root, ".pcimgr-config")
    for n, pf in enumerate(pfs):
        subprocess.run(pcimgr + ["define", pf, "--vfs", str(vfs)], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(pcimgr + ["define", pf, "--vf", "0", "--mac", f"52:54:00:{n:02x}:00:00",
                                 "--vlan", "100", "--qos", "3", "--spoofchk", "off",
                                 "--trust", "on"], check=True, stdout=subprocess.DEVNULL)
        d = definitions.load(cfg, pf)
        assert d is not None
        settings = {str(i): d.vf["0"] | {"mac": f"52:54:00:{n:02x}:00:{i:02x}", "vlan": 100 + i}
                    for i in range(vfs)}
        definitions.save(cfg, dataclasses.replace(d, vf=settings))


RULE = re.compile(r'(\w+)(?:\{([^}]*)\})?(==|!=|\+=|=)"([^"]*)"')


def started(rules: str, template: str, action: str, env: dict[str, str],
            systemd: bool) -> list[str]:
    """The command lines udev starts for one event, by walking the rules as udev does (the
    keys our rules use): RUN programs and, under systemd, the ExecStart of each unit the
    event wants or starts (each start counted as a run: the worst case)."""
    lines = [line for line in rules.splitlines() if line and not line.startswith("#")]
    labels = {m[3]: i for i, line in enumerate(lines) for m in RULE.findall(line)
              if m[0] == "LABEL"}
    env = dict(env)
    commands: list[str] = []

    def expand(value: str) -> str:
        value = value.replace("%k", env["KERNEL"])
        return re.sub(r"\$env\{(\w+)\}", lambda m: env.get(m[1], ""), value)

    def unit(name: str) -> str:
        instance = name.split("@", 1)[1].rsplit(".", 1)[0]
        argv = re.search(r"^ExecStart=(.*)$", template, re.M)
        assert argv, "no ExecStart in the template unit"
        return argv[1].replace("%I", instance)

    i = 0
    while i < len(lines):
        keys = RULE.findall(lines[i])
        i += 1
        matched = True
        for key, attr, op, value in keys:
            if op not in ("==", "!="):
                continue
            if key == "TEST":
                path = expand(value)
                ok = systemd if path == "/run/systemd/system" else os.path.exists(path)
            else:
                now = {"SUBSYSTEM": "pci", "ACTION": action}.get(key, env.get(attr, ""))
                ok = any(fnmatch.fnmatchcase(now, alt) for alt in value.split("|"))
            if ok != (op == "=="):
                matched = False
                break
        if not matched:
            continue
        for key, attr, _, value in keys:
            if key == "GOTO":
                i = labels[value]
            elif key == "IMPORT" and attr == "file":
                with open(expand(value)) as f:
                    env.update(line.strip().split("=", 1) for line in f if "=" in line)
            elif key == "RUN":
                command = expand(value)
                if command.startswith("/bin/systemctl --no-block start "):
                    command = unit(command.rsplit(" ", 1)[1])
                commands.append(command)
            elif key == "ENV" and attr == "SYSTEMD_WANTS":
                commands.append(unit(expand(value)))
    return commands


def udev_commands(pcimgr: list[str], exe: str, root: str, pfs: list[str],
                  systemd: bool) -> list[list[str]]:
    """For each PF, what the generated rules start at coldplug: its add (the igb driver is
    not bound yet; 80-drivers.rules loads it), then its bind; udev's workers run them in
    parallel, the adds first."""
    cfg = os.path.join(root, ".pcimgr-config")
    rules, template = udev.rules(exe, cfg), udev.template(exe, cfg)
    commands = []
    for action in ("add", "bind"):
        for pf in pfs:
            env = {"KERNEL": pf, "PCI_ID": "8086:10C9", "SUBSYSTEM": "pci"}
            if action == "bind":
                env["DRIVER"] = "igb"
            for line in started(rules, template, action, env, systemd):
                argv = line.split()
                assert argv[0] == exe, line
                commands.append(pcimgr + argv[1:])
    return commands


def timed(commands: list[list[str]]) -> tuple[float, float]:
    """Wall seconds until every command exited, and the CPU seconds (user + system) they
    used: on a machine others load, the CPU figure is the steadier one."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for c in commands]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - t
    bad = [f"{' '.join(c)}: exit {p.returncode}: {err.decode().strip()}"
           for c, p, err in zip(commands, procs, errors, strict=True) if p.returncode]
    if bad:
        sys.exit("a run failed:\n" + "\n".join(bad))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pfs", type=int, default=4)
    ap.add_argument("--vfs", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--systemd", action="store_true",
                    help="the rules' systemd path: the template unit's command lines")
    ap.add_argument("--dir", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    args = ap.parse_args()
    exe = os.path.join(os.path.dirname(sys.executable), "pcimgr")
    with tempfile.TemporaryDirectory(prefix="pcimgr-boot-", dir=args.dir) as tmp:
        root, pristine = os.path.join(tmp, "host"), os.path.join(tmp, "pristine")
        builder.build(root, profiles.scale(args.pfs, 0))
        pcimgr = [exe, "--sysfs-root", root]
        pfs = [f"0000:{bus:02x}:00.0" for bus in range(1, args.pfs + 1)]
        define(pcimgr, root, pfs, args.vfs)
        shutil.copytree(root, pristine, symlinks=True)
        ways = {"apply": [pcimgr + ["apply"]],
                "udev": udev_commands(pcimgr, exe, root, pfs, args.systemd)}
        times: dict[str, list[float]] = {name: [] for name in ways}
        cpu: dict[str, list[float]] = {name: [] for name in ways}
        for run in range(args.runs + 1):  # the first round warms up
            for name, commands in ways.items():
                shutil.rmtree(root)
                shutil.copytree(pristine, root, symlinks=True)
                elapsed, used = timed(commands)
                status = subprocess.run(pcimgr + ["status"], capture_output=True, text=True)
                if status.returncode != 0:
                    sys.exit(f"{name}: not every definition is ok:\n{status.stdout}")
                if run:
                    times[name].append(elapsed)
                    cpu[name].append(used)
        a, u = (statistics.median(times[n]) for n in ("apply", "udev"))
        ca, cu = (statistics.median(cpu[n]) for n in ("apply", "udev"))
        print(f"{args.pfs} PFs x {args.vfs} VFs, settings on every VF; "
              f"{len(ways['udev'])} processes started by the rules "
              f"({'systemd' if args.systemd else 'RUN'}); load average "
              f"{os.getloadavg()[0]:.2f} at the end")
        print(f"{'':>6} {'wall ms':>8} {'CPU ms':>8}")
        print(f"{'apply':>6} {a * 1e3:8.0f} {ca * 1e3:8.0f}   one `pcimgr apply`")
        print(f"{'udev':>6} {u * 1e3:8.0f} {cu * 1e3:8.0f}   what the rules start, together")
        print(f"{'ratio':>6} {u / a:8.2f} {cu / ca:8.2f}   (medians of {args.runs} alternating "
              "runs; target: wall <= 1.2)")


if __name__ == "__main__":
    main()
