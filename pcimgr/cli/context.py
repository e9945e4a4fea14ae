"""What every command needs: the machine (chosen once), its directories, libvirt and
names, all built lazily so that a parse error touches nothing."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, NotFound, PcimgrError
from pcimgr.core.terminal import safe
from pcimgr.host.sysfs import DEVICES

if TYPE_CHECKING:
    from pcimgr.core.model import Host
    from pcimgr.guests.holdings import Holdings
    from pcimgr.host.libvirt_adapter import Domain, Libvirt
    from pcimgr.host.machine import Machine
    from pcimgr.host.names import Namer
    from pcimgr.host.sysfs import Sysfs


class Context:
    """What every command needs, built lazily so a parse error touches nothing."""

    def __init__(self, sysfs_root: str, state_dir: str | None, lock_timeout: float,
                 connect: str | None, config_dir: str | None = None,
                 verbose: bool = False, snapshot: str | None = None) -> None:
        self.snapshot = snapshot  # --snapshot FILE: the host it recorded, not this one
        self.verbose = verbose  # -v: each sysfs write and libvirt change as it happens
        self.config_dir_option = config_dir
        self.sysfs_root = sysfs_root
        self.state_dir = state_dir
        self.lock_timeout = lock_timeout
        self.connect = connect
        self._machine: Machine | None = None
        self._namer: Namer | None = None
        self._holdings: Any = False  # not asked yet
        self._domains: Any = False
        self.holdings_problem: str | None = None
        self._said_unreadable = False

    @property
    def config_dir(self) -> str:
        """--config-dir, else the machine's (/etc/pcimgr, or inside a simulated host)."""
        explicit = self.config_dir_option
        return os.path.abspath(explicit) if explicit else self.machine.default_config_dir

    @property
    def state_path(self) -> str:
        """--state-dir, else the machine's (/var/lib/pcimgr, or inside a simulated host),
        unchecked: `state` is the one changes use."""
        return os.path.abspath(self.state_dir) if self.state_dir else \
            self.machine.default_state_dir

    @property
    def state(self) -> str:
        """The state directory, refused when it overlaps the configuration directory
        (apply would take the definitions for its own files, and the other way round)."""
        state, cfg = self.state_path, self.config_dir
        real_state, real_cfg = os.path.realpath(state), os.path.realpath(cfg)
        if os.path.commonpath([real_state, real_cfg]) in (real_state, real_cfg):
            raise BadInput(f"--state-dir {state} and --config-dir {cfg} overlap; give them "
                           "separate directories (defaults: /var/lib/pcimgr, /etc/pcimgr)")
        return state

    @property
    def asked_uri(self) -> str | None:
        """The libvirt URI to ask, or None where the machine does not ask libvirt unless
        told which one (a simulated host: the host's own libvirtd knows nothing of it)."""
        if not (self.machine.asks_libvirt_by_default or self.connect
                or os.environ.get("LIBVIRT_DEFAULT_URI")):
            return None
        return self.uri

    @property
    def uri(self) -> str:
        from pcimgr.host import libvirt_uri  # not the adapter: reads may not need it
        return libvirt_uri.default_uri(self.connect)

    def libvirt(self) -> Libvirt:
        """The connection changes go through; where the machine does not ask libvirt by
        default, only when told which (--connect or LIBVIRT_DEFAULT_URI)."""
        if self.asked_uri is None:
            raise BadInput(f"{self.sysfs.root} is {self.machine.kind}, whose functions no "
                           "guest of this machine's libvirt has; give --connect URI (e.g. "
                           "test:///default) to use a libvirt with it")
        from pcimgr.host import libvirt_adapter
        lv = libvirt_adapter.connect(self.uri)
        lv.trace = _say if self.verbose else None
        return lv

    def domains(self) -> list[Domain] | None:
        """Every guest with its XML (recorded with a snapshot, else from libvirt), or None
        when libvirt cannot be asked. See asked_uri for when it is not asked at all."""
        if self._domains is False:
            self._domains = self.machine.recorded_domains()
            if self._domains is None and self.asked_uri is not None:
                self._domains = self.machine.local_domains(self.uri)
            if self._domains is None and self.asked_uri is not None:
                try:
                    self._domains = self.libvirt().domains()
                except PcimgrError as e:
                    self.holdings_problem = f"pcimgr: note: guests unknown: {e}"
        found: list[Domain] | None = self._domains
        return found

    def holdings(self) -> Holdings | None:
        """Which domains hold which functions, or None when libvirt cannot be asked."""
        if self._holdings is False:
            domains = self.domains()
            self._holdings = None
            if domains is not None and not any(
                    "hostdev" in (d.live_xml or "") or "hostdev" in (d.config_xml or "")
                    for d in domains):
                self._holdings = {}  # no guest names a host device: nothing to parse
            elif domains is not None:
                from pcimgr.guests import holdings as guests
                self._holdings = guests.of_domains(domains)
        return self._holdings

    def mdev_holders(self) -> dict[str, list[str]] | None:
        """mdev UUID -> the domains whose XML names it; None when libvirt cannot be asked."""
        domains = self.domains()
        if domains is None:
            return None
        from pcimgr.core.mdev import holders_of
        return holders_of([(d.name, d.live_xml, d.config_xml) for d in domains])

    def holdings_or_fail(self) -> Holdings:
        """For changes: every domain's devices, or the error that prevented reading them."""
        from pcimgr.guests import holdings as guests
        if self._holdings is False or self._holdings is None:
            self._holdings = guests.scan(self.libvirt())
        found: Holdings = self._holdings
        return found

    def holders(self, address: PciAddress) -> list[str] | None:
        holdings = self.holdings()
        if holdings is None:
            return None  # and no import of the libvirt side at all
        if not holdings:
            return []
        from pcimgr.guests import holdings as guests
        return guests.names(holdings, address)

    @property
    def machine(self) -> Machine:
        """The host pcimgr works on, chosen once: the simulated host when --sysfs-root is
        one (its marker says so), else the Linux host whose sysfs is at that root."""
        if self._machine is None:
            machine = self._choose()
            if not os.path.isdir(machine.sysfs.path(DEVICES)):
                raise NotFound(f"no PCI sysfs tree at {machine.sysfs.root} (no "
                               "bus/pci/devices); give --sysfs-root a directory laid out like "
                               "/sys, e.g. one made by `pcimgr sim create DIR`")
            if self.verbose:
                machine.sysfs.trace = _say
            notice = machine.unknown_notice()
            if notice:
                _say(safe(notice))
            self._machine = machine
        return self._machine

    def _choose(self) -> Machine:
        """This host's /sys (also mounted elsewhere), a simulated host (its marker), a
        snapshot (--snapshot FILE, or a directory holding a snapshot's manifest), or any
        other tree: read only, its host facts unknown (docs/snapshots.md)."""
        if self.snapshot is not None:
            if self.sysfs_root != "/sys":
                raise BadInput("--snapshot and --sysfs-root both say which host to read; "
                               "give one of them")
            from pcimgr.host.snapshot.machine import SnapshotMachine
            from pcimgr.host.snapshot.unpack import unpack
            return SnapshotMachine(unpack(self.snapshot), source=self.snapshot)
        root = os.path.abspath(self.sysfs_root)
        from pcimgr.host.linux import LinuxMachine
        if root == "/sys" or _same_directory(root, "/sys"):
            return LinuxMachine(root)
        from pcimgr.sim import marker
        if marker.is_simulated(root):
            from pcimgr.sim.machine import SimulatedMachine
            return SimulatedMachine(root)
        from pcimgr.host.snapshot import layout
        if layout.has_manifest(root):
            from pcimgr.host.snapshot.machine import SnapshotMachine
            return SnapshotMachine(root)
        from pcimgr.host.readonly import ReadOnlyMachine
        return ReadOnlyMachine(root)

    @property
    def sysfs(self) -> Sysfs:
        return self.machine.sysfs

    def host(self) -> Host:
        from pcimgr.host import discovery
        host = discovery.scan(self.sysfs)
        if host.unreadable and not self._said_unreadable:
            self._said_unreadable = True
            shown = ", ".join(host.unreadable[:8]) + (
                f" and {len(host.unreadable) - 8} more" if len(host.unreadable) > 8 else "")
            _say(f"note: {len(host.unreadable)} function(s) in {self.sysfs.path(DEVICES)} "
                 f"could not be read (no uevent, vendor/device/class files or config "
                 f"header) and are left out: {safe(shown)}")
        return host

    @property
    def namer(self) -> Namer:
        if self._namer is None:
            from pcimgr.host.names import Namer
            self._namer = Namer(udev=self.machine.udev_database())
        return self._namer


def _same_directory(a: str, b: str) -> bool:
    """/sys bind-mounted elsewhere (a container's /host/sys) is this host's sysfs."""
    try:
        x, y = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


def _say(line: str) -> None:
    import click
    click.echo(f"pcimgr: {line}", err=True)
