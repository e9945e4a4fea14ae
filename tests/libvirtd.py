"""A real libvirtd for the tests: started by the test run when none answers, stopped after.

Debian's daemon starts by hand without systemd (virtlogd -d, libvirtd -d) once
its runtime and log directories exist. Domains are small TCG q35 machines with
no OS and spare PCIe root ports, so that devices can be attached to them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid as uuidlib

URI = "qemu:///system"
PIDS = {"virtlogd": "/run/pcimgr-tests-virtlogd.pid", "libvirtd": "/run/pcimgr-tests-libvirtd.pid"}


def reachable() -> bool:
    return subprocess.run(["virsh", "-c", URI, "uri"], capture_output=True,
                          timeout=30).returncode == 0


def unavailable() -> str | None:
    """Why a real libvirtd cannot run here, or None."""
    if os.geteuid() != 0:
        return "qemu:///system needs root"
    for tool in ("libvirtd", "virtlogd", "virsh"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/run test installs it)"
    return None


def start() -> list[str]:
    """Start what is not running; the names of the daemons started (to stop later)."""
    if reachable():
        return []
    for d in ("/var/log/libvirt/qemu", "/run/libvirt", "/var/lib/libvirt/qemu"):
        os.makedirs(d, exist_ok=True)
    started = []
    for daemon in ("virtlogd", "libvirtd"):
        if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode != 0:
            subprocess.run([daemon, "-d", "-p", PIDS[daemon]], check=True, timeout=30)
            started.append(daemon)
    deadline = time.monotonic() + 20
    while not reachable():
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd did not answer within 20 s; see /var/log/libvirt")
        time.sleep(0.2)
    return started


def stop(started: list[str]) -> None:
    for daemon in reversed(started):
        try:
            with open(PIDS[daemon]) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def domain_xml(name: str, root_ports: int = 3) -> str:
    ports = "".join(f"<controller type='pci' index='{i}' model='pcie-root-port'/>"
                    for i in range(1, root_ports + 1))
    # <acpi/>: Debian 12's libvirt 9.0 otherwise passes -no-acpi, which QEMU 10 refuses
    return (f"<domain type='qemu'><name>{name}</name><uuid>{uuidlib.uuid4()}</uuid>"
            "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>"
            "<devices><controller type='pci' index='0' model='pcie-root'/>"
            f"{ports}<controller type='usb' model='none'/><memballoon model='none'/>"
            "</devices></domain>")


def define(name: str, running: bool) -> None:
    """A fresh domain of that name (an old one is removed first), started if asked."""
    virsh("destroy", name)
    virsh("undefine", name)
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(domain_xml(name))
        f.flush()
        r = virsh("define", f.name)
    assert r.returncode == 0, r.stderr
    if running:
        r = virsh("start", name)
        assert r.returncode == 0, r.stderr


def virsh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=60)
