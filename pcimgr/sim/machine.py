"""The simulated host: the same seam as the Linux host (host/machine.py), answered by the
simulated kernel and the facts its profile declares. Nothing outside sim/ and the
start-up choice (cli/context.py) knows a host is simulated."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pcimgr.core.errors import NeedsRoot, NotFound, Refused
from pcimgr.core.vfconfig import VfConfig
from pcimgr.host import sysfiles, trust, udevdb
from pcimgr.host.recorded import RecordedFacts
from pcimgr.host.sysfs import Sysfs, WriteFn
from pcimgr.sim import marker

if TYPE_CHECKING:
    from pcimgr.host.services import Holder, UnitState
    from pcimgr.sim.kernel import SimulatedKernel


class SimulatedMachine:
    kind = "a simulated host"
    loads_modules = False     # a simulated host has a driver loaded or not
    watches_uevents = False   # no netlink: waits poll sysfs
    needs_root = False
    asks_libvirt_by_default = False  # the host's libvirtd knows nothing of this tree

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        trust.check(self.root, os.path.join(self.root, marker.MARKER), "the simulated host",
                    "`pcimgr sim create DIR`")
        self._real_root = os.path.realpath(self.root)
        if os.path.lexists(os.path.join(self.root, marker.UNDO_DIR)):
            from pcimgr.sim import undo  # a change killed inside the kernel's reaction
            undo.recover(self.root)
        self.sysfs = Sysfs(self.root, dev_root=os.path.join(self.root, "dev"), react=self._write)
        self.default_state_dir = os.path.join(self.root, ".pcimgr-state")
        self.default_config_dir = os.path.join(self.root, ".pcimgr-config")
        self.lock_dir = os.path.join(self.root, ".pcimgr-run")
        self.system_root = self.root  # install-udev writes its /etc below the tree

    def _write(self, rel: str, value: str, raw: WriteFn) -> None:
        """The simulated kernel's reaction, for writes that stay inside the tree: a link
        in a tree someone else may have shaped must not carry a root-run write elsewhere."""
        path = os.path.join(self.root, rel)
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._real_root]) != self._real_root:
            raise Refused(f"refusing to write {path}: a link takes it to {real}, outside the "
                          f"simulated host {self.root}; rebuild the host with `pcimgr sim create`")
        self.kernel.write(rel, value, raw)

    @cached_property
    def kernel(self) -> SimulatedKernel:
        # only writes and netlink need it: `list` never imports the simulated kernel
        from pcimgr.sim.kernel import SimulatedKernel
        return SimulatedKernel(self.root)

    @cached_property
    def _declared(self) -> dict[str, Any]:
        host: dict[str, Any] = marker.read(self.root).get("host", {})
        return host

    @cached_property
    def facts(self) -> RecordedFacts:
        return RecordedFacts(self._declared)

    def require_root(self, what: str) -> None:
        self.check_writable()  # no root needed: the tree's owner may change it

    def check_writable(self) -> None:
        """A tree made by another user is theirs to change: one line, not a PermissionError
        half-way through a transaction."""
        if not os.access(self.root, os.W_OK):
            raise NeedsRoot(f"permission denied: {self.root} (a simulated host) is not "
                            f"writable by uid {os.geteuid()}; run as its owner (uid "
                            f"{os.stat(self.root).st_uid}) or make your own with "
                            "`pcimgr sim create DIR`")
        self.kernel.verify()

    def vf_configs(self, pf: str, netdev: str) -> list[VfConfig]:
        return [VfConfig.from_dict(c) for c in self.kernel.vf_configs(pf)]

    def set_vf(self, pf: str, netdev: str, index: int, settings: dict[str, Any]) -> None:
        self.kernel.set_vf(pf, index, settings)

    def set_link(self, pf: str, netdev: str, up: bool) -> None:
        self.kernel.set_link(pf, netdev, up)

    def vfio_holders(self) -> dict[int, list[str]]:
        return self.kernel.vfio_holders()

    def kernel_cmdline(self) -> str:
        return str(self._declared.get("cmdline", ""))

    def interrupt_remapping(self) -> bool:
        return bool(self._declared.get("interrupt_remapping"))

    def module_available(self, name: str) -> bool:
        return name in self._declared.get("modules", [])

    def load_module(self, name: str) -> None:
        from pcimgr.sim import desktop
        data = desktop.load(self.root)
        if data is None or name.replace("-", "_") not in data["unloaded"]:
            raise NotFound(f"driver {name} is not loaded on this simulated host")
        self.kernel.load_module(name.replace("-", "_"), data["unloaded"].pop(
            name.replace("-", "_")))
        desktop.save(self.root, data)

    # the desktop's services, holders and modules (sim/desktop.py)
    def node_holders(self, nodes: list[str]) -> dict[str, list[Holder]]:
        from pcimgr.host.services import Holder
        from pcimgr.sim import desktop
        data = desktop.load(self.root) or {"units": {}, "holders": {}}
        wanted = set(nodes)
        found: dict[str, list[Holder]] = {}
        for unit in data["units"].values():
            for node in unit["holds"] if unit["active"] else ():
                if node in wanted:
                    found.setdefault(node, []).append(Holder(unit["pid"], unit["comm"],
                                                             unit["id"]))
        for node, holders in data["holders"].items():
            if node in wanted:
                found.setdefault(node, []).extend(Holder(pid, comm, unit)
                                                  for pid, comm, unit in holders)
        return found

    def unit_state(self, unit: str) -> UnitState | None:
        from pcimgr.host.services import UnitState
        from pcimgr.sim import desktop
        data = desktop.load(self.root)
        if data is None or not data.get("systemd"):
            return None
        found = _unit(data, unit)
        if found is None:  # systemd's own slices are always there
            known = unit in ("system.slice", "user.slice", "init.scope")
            return UnitState(unit, "active" if known else "inactive", known)
        return UnitState(found["id"], "active" if found["active"] else "inactive", True)

    def control_unit(self, verb: str, unit: str, timeout: float) -> None:
        from pcimgr.core.errors import KernelError
        from pcimgr.sim import desktop
        data = desktop.load(self.root)
        found = _unit(data, unit) if data else None
        self.run_program(["systemctl", verb, "--", unit])
        if data is None or found is None:
            raise KernelError(f"`systemctl {verb} -- {unit}` failed (exit 5: Unit {unit} not "
                              "loaded.)")
        if verb == "stop" and found["refuses_stop"]:
            raise KernelError(f"`systemctl stop -- {unit}` failed (exit 1: Job for {unit} "
                              "canceled.)")
        found["active"] = verb == "start"
        desktop.save(self.root, data)

    def unit_property(self, unit: str, name: str) -> str:
        from pcimgr.sim import desktop
        data = desktop.load(self.root) or {"properties": {}}
        return str(data["properties"].get(unit, {}).get(name, ""))

    def set_unit_property(self, unit: str, name: str, value: str, timeout: float) -> None:
        from pcimgr.sim import desktop
        self.run_program(["systemctl", "set-property", "--runtime", "--", unit,
                          f"{name}={value}"])
        data = desktop.load(self.root)
        if data is not None:
            data["properties"].setdefault(unit, {})[name] = value
            desktop.save(self.root, data)

    def unload_module(self, name: str, timeout: float) -> None:
        from pcimgr.sim import desktop
        data = desktop.load(self.root)
        if data is None:
            raise NotFound(f"no module {name} on this simulated host")
        data["unloaded"][name] = self.kernel.unload_module(name)
        desktop.save(self.root, data)

    def system_log(self, message: str, fields: dict[str, str] | None = None) -> None:
        """The real host's log is not this tree's: its history file is the record."""

    # its /etc, /proc/cpuinfo and programs are files in the tree (sim/boot.py writes them)
    RAN = ".pcimgr-ran"  # what run_program would have run, one JSON list per line

    def unknown_notice(self) -> str | None:
        return None

    def recorded_domains(self) -> None:
        return None  # libvirt is asked (where it is asked at all)

    def local_domains(self, uri: str) -> None:
        return None  # this machine's libvirtd knows nothing of the tree

    def udev_database(self) -> udevdb.UdevDatabase | None:
        """None unless the tree lays one out (run/udev/data/+pci:ADDRESS): names come from
        pci.ids, as on a host without udev."""
        self._inside(udevdb.DATA_DIR)  # no link out of the tree
        return udevdb.UdevDatabase.open(self.root)

    def read_system_file(self, rel: str) -> bytes | None:
        return sysfiles.read(self.root, self._inside(rel))

    def list_system_dir(self, rel: str) -> list[str]:
        return sysfiles.names(self.root, self._inside(rel))

    def write_system_file(self, rel: str, data: bytes, mode: int) -> None:
        sysfiles.write(self.root, self._inside(rel), data, mode)

    def remove_system_file(self, rel: str) -> None:
        os.unlink(sysfiles.path(self.root, self._inside(rel)))

    def find_program(self, name: str) -> str | None:
        return sysfiles.which(self.root, name)

    def run_program(self, argv: list[str]) -> None:
        """Never the real update-grub or update-initramfs: the host's are not this tree's.
        Recorded instead (ran())."""
        import json
        with open(os.path.join(self.root, self.RAN), "a") as f:
            f.write(json.dumps(argv) + "\n")

    def ran(self) -> list[list[str]]:
        import json
        try:
            with open(os.path.join(self.root, self.RAN)) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def _inside(self, rel: str) -> str:
        """rel, when no link takes it out of the tree (as _write for sysfs)."""
        real = os.path.realpath(sysfiles.path(self.root, rel))
        if os.path.commonpath([real, self._real_root]) != self._real_root:
            raise Refused(f"refusing {sysfiles.path(self.root, rel)}: a link takes it to "
                          f"{real}, outside the simulated host {self.root}; rebuild the host "
                          "with `pcimgr sim create`")
        return rel


def _unit(data: dict[str, Any], unit: str) -> dict[str, Any] | None:
    """A unit by its name or an alias of it (display-manager.service)."""
    units: dict[str, dict[str, Any]] = data["units"]
    return units.get(unit) or next((u for u in units.values() if u["id"] == unit), None)
