"""The one seam to the host: everything pcimgr asks of the machine it runs on.

Two implementations, chosen once at start-up (cli/context.py): the Linux host
(host/linux.py) and the simulated host (sim/machine.py). No other module asks
whether the host is real; it asks the machine, and the simulated one answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from pcimgr.host.sysfs import Sysfs

if TYPE_CHECKING:
    from pcimgr.core.vfconfig import VfConfig
    from pcimgr.host.libvirt_adapter import Domain
    from pcimgr.host.services import Holder, UnitState
    from pcimgr.host.udevdb import UdevDatabase


class Facts(Protocol):
    """What the host uses its devices for that sysfs does not show (read lazily)."""

    known: bool  # False: never recorded for this tree; empty answers mean "unknown"

    @property
    def addresses(self) -> dict[str, list[str]]:
        """interface -> its CIDRs (not the fe80:: every IPv6 interface has)"""

    @property
    def routes(self) -> dict[str, list[str]]:
        """interface -> destinations of the routes through it ("default" among them)"""

    @property
    def mounts(self) -> dict[str, str]:
        """block device -> mount point"""

    @property
    def network_mounts(self) -> dict[str, str]:
        """server address -> what is mounted from it"""

    @property
    def swaps(self) -> frozenset[str]:
        """block devices used as swap"""

    @property
    def open_blocks(self) -> dict[str, list[str]]:
        """block device -> processes ("comm[pid]") that have it open"""

    def route_to(self, server: str) -> str | None:
        """The interface the host reaches an address through."""


class Machine(Protocol):
    sysfs: Sysfs
    kind: str                 # how messages name it: "this host", "a simulated host"
    loads_modules: bool       # a missing driver can be loaded (modprobe)
    watches_uevents: bool     # a kernel uevent monitor can wake waits
    needs_root: bool          # changes need uid 0
    asks_libvirt_by_default: bool  # without --connect, ask the default libvirt URI
    default_state_dir: str
    default_config_dir: str
    lock_dir: str             # one lock per host, whatever --state-dir says
    system_root: str          # where its /etc is: udev rules and units go below it

    @property
    def facts(self) -> Facts: ...

    def require_root(self, what: str) -> None:
        """Raise NeedsRoot naming what needs it, when this host needs root for changes."""

    def check_writable(self) -> None:
        """Raise NeedsRoot when the tree pcimgr would change is not this user's to change."""

    def vf_configs(self, pf: str, netdev: str) -> list[VfConfig]:
        """One per VF index, as the PF's driver reports them."""

    def set_vf(self, pf: str, netdev: str, index: int, settings: dict[str, Any]) -> None:
        """Set VF properties; OSError with the kernel's errno when refused (EAGAIN: in reset)."""

    def set_link(self, pf: str, netdev: str, up: bool) -> None: ...

    def vfio_holders(self) -> dict[int, list[str]]:
        """IOMMU group -> processes ("comm[pid]") that have /dev/vfio/<group> open."""

    def kernel_cmdline(self) -> str: ...

    def interrupt_remapping(self) -> bool: ...

    def module_available(self, name: str) -> bool:
        """Loaded, built in, or installed as a module of the running kernel."""

    def load_module(self, name: str) -> None:
        """Load a driver's module; KernelError when it cannot be had."""

    def system_log(self, message: str, fields: dict[str, str] | None = None) -> None:
        """Tell the host's log what pcimgr changed: the journal with fields to select on
        (PCIMGR_COMMAND, PCIMGR_RESULT, PCIMGR_STEPS, ...), else syslog."""

    def unknown_notice(self) -> str | None:
        """What this machine cannot know (a foreign tree's host facts), said once on stderr;
        None when it knows what it is asked."""

    def recorded_domains(self) -> list[Domain] | None:
        """The guests as recorded with the tree (a snapshot); None: ask libvirt, if any."""

    def local_domains(self, uri: str) -> list[Domain] | None:
        """URI's guests as its daemon keeps them on this host's disk, read without libvirt
        (read commands); None: ask libvirt."""

    def udev_database(self) -> UdevDatabase | None:
        """The udev database of this host's PCI functions (names from its hwdb), None
        where there is none for the functions of this sysfs tree."""

    # the host's own files and programs (doctor --fix: bootloader, initramfs); each path is
    # relative to system_root ("etc/default/grub", "proc/cpuinfo")
    def read_system_file(self, rel: str) -> bytes | None:
        """The file's bytes, None when it does not exist."""

    def list_system_dir(self, rel: str) -> list[str]:
        """The directory's entries, sorted; none when it does not exist."""

    def write_system_file(self, rel: str, data: bytes, mode: int) -> None:
        """Atomically; an existing file keeps its mode, mode is for a new one."""

    def remove_system_file(self, rel: str) -> None: ...

    def find_program(self, name: str) -> str | None:
        """The host's program of that name ("/usr/sbin/update-grub"), None if it has none."""

    def run_program(self, argv: list[str]) -> None:
        """Run one of the host's programs (update-grub, update-initramfs -u); KernelError
        naming it and its last words when it fails."""

    # processes, services and modules, as a hand-off changes them (handoff/)
    def node_holders(self, nodes: list[str]) -> dict[str, list[Holder]]:
        """/dev node -> the processes that have it open, with their systemd units."""

    def unit_state(self, unit: str) -> UnitState | None:
        """None where no service manager pcimgr can ask runs (not systemd)."""

    def control_unit(self, verb: str, unit: str, timeout: float) -> None:
        """`systemctl start|stop UNIT`, waiting at most timeout; KernelError when it fails."""

    def unit_property(self, unit: str, name: str) -> str:
        """A unit's property as `systemctl show --value` prints it ("" when unset)."""

    def set_unit_property(self, unit: str, name: str, value: str, timeout: float) -> None:
        """At runtime only (`systemctl set-property --runtime`): a reboot forgets it."""

    def unload_module(self, name: str, timeout: float) -> None:
        """`modprobe -r NAME`; KernelError when the module cannot go (in use, built in)."""
