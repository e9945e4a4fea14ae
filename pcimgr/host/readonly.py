"""A machine pcimgr reads but never changes: a sysfs tree that is not this host's own
/sys. What it knows beyond sysfs is what was recorded with the tree (a snapshot,
host/snapshot/) or nothing (any other tree, "foreign": its host facts are unknown, never
borrowed from the host pcimgr runs on)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pcimgr.core.errors import Refused
from pcimgr.host import sysfiles
from pcimgr.host.recorded import RecordedFacts, UnknownFacts
from pcimgr.host.sysfs import Sysfs, WriteFn
from pcimgr.host.udevdb import UdevDatabase

if TYPE_CHECKING:
    from pcimgr.core.vfconfig import VfConfig
    from pcimgr.host.libvirt_adapter import Domain
    from pcimgr.host.services import Holder, UnitState


class ReadOnlyMachine:
    """A foreign tree: sysfs from ROOT, every other fact unknown."""

    loads_modules = False
    watches_uevents = False
    needs_root = False
    asks_libvirt_by_default = False  # this host's libvirtd knows nothing of the tree

    def __init__(self, root: str, dev_root: str | None = None,
                 system_root: str | None = None) -> None:
        self.root = os.path.abspath(root)
        self.sysfs = Sysfs(self.root, dev_root=dev_root or os.path.join(self.root, ".no-dev"),
                           react=self._refuse_write)
        self.kind = f"a tree that is not this host's /sys ({self.root})"
        self._system_root = system_root
        # nothing pcimgr keeps belongs to the tree: definitions and state stay empty
        self.default_state_dir = os.path.join(self.root, ".pcimgr-state")
        self.default_config_dir = os.path.join(self.root, ".pcimgr-config")
        self.lock_dir = os.path.join(self.root, ".pcimgr-run")
        self.system_root = system_root or os.path.join(self.root, ".no-system")

    @property
    def recorded(self) -> dict[str, Any] | None:
        """The host facts recorded with the tree; None: unknown."""
        return None

    @property
    def facts(self) -> RecordedFacts:
        recorded = self.recorded
        return UnknownFacts() if recorded is None else RecordedFacts(recorded)

    def unknown_notice(self) -> str | None:
        """Said once on stderr by read commands: what this tree cannot tell."""
        return (f"note: {self.root} is not this host's /sys, nor a simulated host or a "
                "snapshot: its interfaces' addresses and routes, mounts, swaps, guests, "
                "kernel command line and modules are unknown (shown as such, not taken "
                "from this host); take a snapshot on its host with `pcimgr snapshot FILE`")

    def refusal(self) -> str:
        return (f"refusing to change {self.root}: it is not this host's /sys, and pcimgr "
                "changes only the host it runs on (or a simulated host); run the command "
                "there")

    def _refuse_write(self, rel: str, value: str, raw: WriteFn) -> None:
        raise Refused(self.refusal())

    def require_root(self, what: str) -> None:
        raise Refused(self.refusal())

    def check_writable(self) -> None:
        raise Refused(self.refusal())

    def vf_configs(self, pf: str, netdev: str) -> list[VfConfig]:
        from pcimgr.core.vfconfig import VfConfig
        return [VfConfig.from_dict(c) for c in self._recorded("vf_configs", {}).get(pf, [])]

    def set_vf(self, pf: str, netdev: str, index: int, settings: dict[str, Any]) -> None:
        raise Refused(self.refusal())

    def set_link(self, pf: str, netdev: str, up: bool) -> None:
        raise Refused(self.refusal())

    def vfio_holders(self) -> dict[int, list[str]]:
        return {int(g): list(p) for g, p in self._recorded("vfio_holders", {}).items()}

    def kernel_cmdline(self) -> str:
        return str(self._recorded("cmdline", ""))

    def interrupt_remapping(self) -> bool:
        return bool(self._recorded("interrupt_remapping", False))

    def module_available(self, name: str) -> bool:
        wanted = {name, name.replace("-", "_")}
        return bool(wanted & set(self._recorded("modules", ())))

    def load_module(self, name: str) -> None:
        raise Refused(self.refusal())

    def system_log(self, message: str, fields: dict[str, str] | None = None) -> None:
        """Nothing changes here, so there is nothing to log."""

    def recorded_domains(self) -> list[Domain] | None:
        """The guests' PCI devices as recorded with the tree; None: unknown."""
        return None

    def local_domains(self, uri: str) -> None:
        return None  # the host's libvirtd knows nothing of the tree

    def udev_database(self) -> UdevDatabase | None:
        return UdevDatabase.open(self._system_root) if self._system_root else None

    def read_system_file(self, rel: str) -> bytes | None:
        return sysfiles.read(self._system_root, rel) if self._system_root else None

    def list_system_dir(self, rel: str) -> list[str]:
        return sysfiles.names(self._system_root, rel) if self._system_root else []

    def write_system_file(self, rel: str, data: bytes, mode: int) -> None:
        raise Refused(self.refusal())

    def remove_system_file(self, rel: str) -> None:
        raise Refused(self.refusal())

    def find_program(self, name: str) -> str | None:
        return None  # the tree's host's programs are not here to run

    def run_program(self, argv: list[str]) -> None:
        raise Refused(self.refusal())

    def node_holders(self, nodes: list[str]) -> dict[str, list[Holder]]:
        return {}  # no process of this host holds the tree's nodes

    def unit_state(self, unit: str) -> UnitState | None:
        return None  # its services are not this host's: unknown

    def control_unit(self, verb: str, unit: str, timeout: float) -> None:
        raise Refused(self.refusal())

    def unit_property(self, unit: str, name: str) -> str:
        return ""

    def set_unit_property(self, unit: str, name: str, value: str, timeout: float) -> None:
        raise Refused(self.refusal())

    def unload_module(self, name: str, timeout: float) -> None:
        raise Refused(self.refusal())

    def _recorded(self, key: str, default: Any) -> Any:
        """The kernel's own recorded facts (modules, holders, cmdline): none on a foreign
        tree."""
        return default
