"""The Linux host: the machine pcimgr runs on, through /sys, netlink (`ip`), /proc,
modprobe and the root check."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pcimgr.core.errors import KernelError, NeedsRoot
from pcimgr.host import facts, sysfiles
from pcimgr.host.sysfs import REAL_ROOT, Sysfs
from pcimgr.host.udevdb import UdevDatabase

if TYPE_CHECKING:
    from pcimgr.core.vfconfig import VfConfig
    from pcimgr.host.libvirt_adapter import Domain
    from pcimgr.host.services import Holder, UnitState

# subprocess is imported where a program runs (modprobe, the boot tools): a change whose
# driver is loaded starts none, and the import costs ~75 ms in the emulated lab


class LinuxMachine:
    kind = "this host"
    loads_modules = True
    watches_uevents = True
    needs_root = True
    asks_libvirt_by_default = True
    default_state_dir = "/var/lib/pcimgr"
    default_config_dir = "/etc/pcimgr"
    lock_dir = "/run/pcimgr"  # tmpfs: a lock file never outlives a boot
    system_root = "/"

    def __init__(self, root: str = REAL_ROOT) -> None:
        self.sysfs = Sysfs(root)

    @cached_property
    def facts(self) -> facts.LinuxFacts:
        return facts.LinuxFacts(self.sysfs)

    def check_writable(self) -> None:
        """Files are checked one by one as they are written (statefile names a denial)."""

    def require_root(self, what: str) -> None:
        if os.geteuid() != 0:
            raise NeedsRoot(f"{what} needs root; run it with sudo (add --dry-run to see the "
                            "plan without root)")

    # netlink is imported by the commands that touch VFs only: `list` never does
    def vf_configs(self, pf: str, netdev: str) -> list[VfConfig]:
        from pcimgr.host import netlink
        return netlink.vf_configs(netdev)

    def set_vf(self, pf: str, netdev: str, index: int, settings: dict[str, Any]) -> None:
        from pcimgr.host import netlink
        netlink.set_vf(netdev, index, settings)

    def set_link(self, pf: str, netdev: str, up: bool) -> None:
        from pcimgr.host import netlink
        netlink.set_link(netdev, up)

    def vfio_holders(self) -> dict[int, list[str]]:
        return facts.vfio_holders()

    def kernel_cmdline(self) -> str:
        try:
            with open("/proc/cmdline") as f:
                return f.read().strip()
        except OSError:
            return ""

    def interrupt_remapping(self) -> bool:
        """Whether MSIs go through the IOMMU's remapping: its irqchips are named IR-*."""
        try:
            with open("/proc/interrupts") as f:
                return any(" IR-" in line for line in f)
        except OSError:
            return False

    def module_available(self, name: str) -> bool:
        if self.sysfs.exists(f"module/{name.replace('-', '_')}"):
            return True  # loaded or built in
        try:
            with open(f"/lib/modules/{os.uname().release}/modules.dep") as f:
                wanted = (f"/{name}.ko", f"/{name.replace('-', '_')}.ko")
                return any(any(w in line.split(":", 1)[0] for w in wanted) for line in f)
        except OSError:
            return False

    def load_module(self, name: str) -> None:
        import subprocess
        try:
            r = subprocess.run(["modprobe", name], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            raise KernelError(f"cannot load {name}: modprobe failed ({e}); install the module "
                              "or load it by hand") from e
        if r.returncode != 0 or not self.sysfs.exists(f"bus/pci/drivers/{name}"):
            why = r.stderr.strip() or "no such driver after modprobe"
            raise KernelError(f"cannot load {name}: {why}; check that the kernel has the module")

    def unknown_notice(self) -> str | None:
        return None

    def recorded_domains(self) -> None:
        return None  # libvirt is asked (where it is asked at all)

    def local_domains(self, uri: str) -> list[Domain] | None:
        """The system daemon's files (host/libvirt_files.py), for this host's own bus, as root
        (they are root's), while a daemon listens (one that does not says guests unknown)."""
        from pcimgr.host import libvirt_uri
        if uri != libvirt_uri.DEFAULT_URI or self.sysfs.root != REAL_ROOT or \
                os.geteuid() != 0 or libvirt_uri.absent_daemon(uri):
            return None
        from pcimgr.host import libvirt_files
        return libvirt_files.domains()

    def udev_database(self) -> UdevDatabase | None:
        # only for the running kernel's own bus: a tree elsewhere is not what udev saw
        if self.sysfs.root != REAL_ROOT:
            return None
        return UdevDatabase.open(self.system_root)

    def read_system_file(self, rel: str) -> bytes | None:
        return sysfiles.read(self.system_root, rel)

    def list_system_dir(self, rel: str) -> list[str]:
        return sysfiles.names(self.system_root, rel)

    def write_system_file(self, rel: str, data: bytes, mode: int) -> None:
        sysfiles.write(self.system_root, rel, data, mode)

    def remove_system_file(self, rel: str) -> None:
        os.unlink(sysfiles.path(self.system_root, rel))

    def find_program(self, name: str) -> str | None:
        return sysfiles.which(self.system_root, name)

    def run_program(self, argv: list[str]) -> None:
        import subprocess
        command = " ".join(argv)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=1800,
                               stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as e:
            raise KernelError(f"`{command}` could not run ({e}); run it by hand") from e
        if r.returncode != 0:
            said = (r.stderr.strip() or r.stdout.strip()).splitlines()
            raise KernelError(f"`{command}` failed (exit {r.returncode}"
                              + (f": {said[-1]}" if said else "") + "); fix that and run it "
                              "by hand")

    def node_holders(self, nodes: list[str]) -> dict[str, list[Holder]]:
        from pcimgr.host import services
        return services.node_holders(nodes)

    def unit_state(self, unit: str) -> UnitState | None:
        from pcimgr.host import services
        return services.unit_state(unit)

    def control_unit(self, verb: str, unit: str, timeout: float) -> None:
        from pcimgr.host import services
        services.systemctl([verb, "--", unit], timeout)

    def unit_property(self, unit: str, name: str) -> str:
        from pcimgr.host import services
        return services.unit_property(unit, name)

    def set_unit_property(self, unit: str, name: str, value: str, timeout: float) -> None:
        from pcimgr.host import services
        services.systemctl(["set-property", "--runtime", "--", unit, f"{name}={value}"], timeout)

    def unload_module(self, name: str, timeout: float) -> None:
        import subprocess
        try:
            r = subprocess.run(["modprobe", "-r", name], capture_output=True, text=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise KernelError(f"`modprobe -r {name}` did not finish within {timeout:.0f} s") \
                from None
        except OSError as e:
            raise KernelError(f"`modprobe -r {name}` could not run ({e})") from e
        if r.returncode != 0:
            raise KernelError(f"`modprobe -r {name}` failed: "
                              f"{r.stderr.strip() or f'exit {r.returncode}'}")

    # journald's native socket: fields a query can select on (journalctl PCIMGR_RESULT=...)
    JOURNAL_SOCKET = "/run/systemd/journal/socket"

    def system_log(self, message: str, fields: dict[str, str] | None = None) -> None:
        if fields and self._journal(message, fields):
            return
        import syslog
        syslog.openlog("pcimgr", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_NOTICE, message)

    def _journal(self, message: str, fields: dict[str, str]) -> bool:
        """One datagram of KEY=value lines (systemd's native journal protocol); False where
        no journald listens, and the message goes to syslog instead."""
        # _socket, not socket: the module's enum classes cost ~50 ms at start in the lab
        import _socket
        entry = {"MESSAGE": message, "PRIORITY": "5", "SYSLOG_IDENTIFIER": "pcimgr",
                 "SYSLOG_FACILITY": "3", "SYSLOG_PID": str(os.getpid()), **fields}
        data = "".join(f"{key}={' '.join(str(value).split())}\n"
                       for key, value in entry.items()).encode()
        try:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
            try:
                sock.sendto(data, self.JOURNAL_SOCKET)
            finally:
                sock.close()
        except OSError:
            return False
        return True
