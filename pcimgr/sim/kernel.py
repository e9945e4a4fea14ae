"""The simulated kernel: applies Linux's side effects to a simulated /sys after a write.

Only the reaction is simulated; the write itself is the production code in
pcimgr.host.sysfs. Each rule cites the kernel function whose behaviour it copies
(6.1, drivers/pci/pci-sysfs.c, pci-driver.c, iov.c, drivers/base/bus.c), and
tests/lab holds it to what a real kernel answered.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Callable, Iterator

from pcimgr.core import configspace as core_configspace
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, KernelError
from pcimgr.core.model import BRIDGE_CLASSES
from pcimgr.sim import configspace, tree, undo
from pcimgr.sim import desktop as sim_desktop
from pcimgr.sim import mdev as sim_mdev
from pcimgr.sim import vgpu as sim_vgpu

STATE = ".pcimgr-sim-state.json"
WRITE_ONLY = frozenset({"bind", "unbind", "new_id", "remove_id", "drivers_probe", "rescan",
                        "reset", "create", "remove"})
VFIO = "vfio-pci"


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class SimulatedKernel:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.host = tree.marker(self.root)
        self._bus = os.path.join(self.root, "bus/pci")
        self._drivers = os.path.join(self.root, tree.DRIVERS)
        self._state_cache: dict | None = None

    def verify(self) -> None:
        """A damaged state file refused before a change's first write, not half-way."""
        self._state()

    @contextlib.contextmanager
    def _reaction(self) -> Iterator[None]:
        """All or nothing, as a real kernel's store is for the writer (sim/undo.py)."""
        try:
            with undo.atomic(self.root):
                yield
        except BaseException:
            self._state_cache = None  # undone on disk: read it again
            raise

    # -- entry point -------------------------------------------------------

    def write(self, rel: str, value: str, raw_write: Callable[[str, str], None]) -> None:
        if not value:
            # sysfs_kf_write() returns before the attribute's store(): an empty
            # write changes nothing (clearing driver_override takes "\n").
            return
        with self._reaction():
            self._react(rel, value, raw_write)

    def _react(self, rel: str, value: str, raw_write: Callable[[str, str], None]) -> None:
        path = os.path.join(self.root, rel)
        parent = os.path.realpath(os.path.dirname(path))
        attr = os.path.basename(path)

        def commit() -> None:
            undo.before_write(path)
            raw_write(path, value)
            if attr in WRITE_ONLY:  # nothing to read back from these on Linux
                os.truncate(path, 0)

        if parent == self._bus:
            if attr == "drivers_probe":
                return self._drivers_probe(value, commit)
            return commit()
        if os.path.dirname(parent) == self._drivers:
            on_driver = {"bind": self._bind, "unbind": self._unbind, "new_id": self._new_id,
                         "remove_id": self._remove_id}.get(attr)
            return on_driver(os.path.basename(parent), value, commit) if on_driver else commit()
        if sim_desktop.handles(self.root, parent, attr):
            return sim_desktop.write(self.root, parent, attr, value, commit)
        mdevs = self._mdev_bus()
        if mdevs.handles(parent, attr):
            return mdevs.write(parent, attr, value, commit)
        if os.path.basename(parent) == sim_vgpu.DIR and attr == "current_vgpu_type":
            vf = self._device_at(os.path.dirname(parent))
            pf = self._physfn(vf) if vf is not None else None
            spec = (self._sriov_spec(pf) or {}).get("vgpu") if pf is not None else None
            if vf is not None and spec:
                group = tree.group_of(self.root, vf)
                return sim_vgpu.write(os.path.dirname(parent), spec, value, commit,
                                      str(group) in self._state().get("open", {}))
        address = self._device_at(parent)
        if address is None:
            return commit()
        if attr in tree.READ_ONLY:
            raise _fail(errno.EACCES)
        on_device = {"driver_override": self._driver_override,
                     "sriov_numvfs": self._sriov_numvfs,
                     "sriov_drivers_autoprobe": self._sriov_autoprobe,
                     "reset": self._reset}.get(attr)
        return on_device(address, value, commit) if on_device else commit()

    def _mdev_bus(self) -> sim_mdev.MdevBus:
        return sim_mdev.MdevBus(
            self.root, self.host.get("mdev_parents", {}),
            lambda: tree.lowest_free_group(self.root), self._refresh_vfio_group,
            lambda group: str(group) in self._state().get("open", {}))

    def _device_at(self, directory: str) -> PciAddress | None:
        try:
            address = PciAddress.parse(os.path.basename(directory))
        except BadInput:
            return None
        return address if self._exists(address) and tree.device_dir(self.root,
                                                                    address) == directory else None

    # -- device attributes -------------------------------------------------

    def _driver_override(self, address: PciAddress, value: str, commit: Callable[[], None]) -> None:
        if len(value) >= 4096:
            raise _fail(errno.EINVAL)
        commit()
        name = value.split("\n", 1)[0]  # driver_set_override() cuts at the first newline
        tree.set_attr(self.root, address, "driver_override", name or "(null)")

    def _reset(self, address: PciAddress, value: str, commit: Callable[[], None]) -> None:
        """`echo 1 > reset`: the first of reset_method that works; a function no method
        fits has no `reset` file at all. Counted in the kernel state, as a test can ask."""
        if value.strip() != "1":
            raise _fail(errno.EINVAL)
        if not os.path.exists(os.path.join(tree.device_dir(self.root, address), "reset")):
            raise _fail(errno.ENOENT)
        resets = self._state().setdefault("resets", {})
        resets[str(address)] = resets.get(str(address), 0) + 1
        self._save_state()
        commit()

    def resets(self, address: PciAddress) -> int:
        return int(self._state().get("resets", {}).get(str(address), 0))

    def _sriov_autoprobe(self, address: PciAddress, value: str, commit: Callable[[], None]) -> None:
        flag = _strtobool(value)
        if flag is None:
            raise _fail(errno.EINVAL)
        commit()
        tree.set_attr(self.root, address, "sriov_drivers_autoprobe", "1" if flag else "0")

    def _sriov_numvfs(self, pf: PciAddress, value: str, commit: Callable[[], None]) -> None:
        # sriov_numvfs_store(): range first, then "same count" no-op, then driver checks.
        try:
            count = int(value.strip(), 0)
        except ValueError:
            raise _fail(errno.EINVAL) from None
        if not 0 <= count <= 0xFFFF:
            raise _fail(errno.EINVAL)
        if count > int(tree.read_attr(self.root, pf, "sriov_totalvfs")):
            raise _fail(errno.ERANGE)
        current = int(tree.read_attr(self.root, pf, "sriov_numvfs"))
        if count == current:
            commit()
            return
        driver = tree.driver_of(self.root, pf)
        spec = self._pf_spec(pf)
        if driver is None or driver not in spec["configurable_by"] + [VFIO]:
            raise _fail(errno.ENOENT)
        if count == 0:
            commit()
            self._disable_vfs(pf)
            return
        if current:
            raise _fail(errno.EBUSY)
        if driver == VFIO:  # vfio_pci_core_sriov_configure() without enable_sriov=1
            raise _fail(errno.ENOENT)
        commit()
        self._enable_vfs(pf, count)

    # -- driver attributes -------------------------------------------------

    def _bind(self, driver: str, value: str, commit: Callable[[], None]) -> None:
        address = self._named_device(value)
        if address is None or not self._matches(address, driver):
            raise _fail(errno.ENODEV)
        if tree.driver_of(self.root, address) is not None:
            raise _fail(errno.EBUSY)
        commit()
        code = self._probe_with(address, driver)
        if code:
            raise _fail(code)

    def _unbind(self, driver: str, value: str, commit: Callable[[], None]) -> None:
        address = self._named_device(value)
        if address is None or tree.driver_of(self.root, address) != driver:
            raise _fail(errno.ENODEV)
        commit()
        self._detach(address)

    def _new_id(self, driver: str, value: str, commit: Callable[[], None]) -> None:
        ids = _parse_ids(value)
        dynids = self._state().setdefault("dynids", {}).setdefault(driver, [])
        if ids in dynids:
            raise _fail(errno.EEXIST)
        commit()
        dynids.append(ids)
        self._save_state()
        # new_id_store() -> driver_attach(): every unbound function that now matches
        for address in self._all_devices():
            if tree.driver_of(self.root, address) is None and self._ids(address) == ids \
                    and self._matches(address, driver):
                self._probe_with(address, driver)

    def _remove_id(self, driver: str, value: str, commit: Callable[[], None]) -> None:
        ids = _parse_ids(value)
        dynids = self._state().setdefault("dynids", {}).get(driver, [])
        if ids not in dynids:
            raise _fail(errno.ENODEV)
        commit()
        dynids.remove(ids)
        self._save_state()

    # -- bus attributes ----------------------------------------------------

    def _drivers_probe(self, value: str, commit: Callable[[], None]) -> None:
        address = self._named_device(value)
        if address is None:
            raise _fail(errno.ENODEV)
        commit()
        self.probe(address)

    # -- the driver core ---------------------------------------------------

    def probe(self, address: PciAddress) -> None:
        """device_attach(): the first loaded driver that matches and probes wins.

        Probe errors are not reported to the writer of drivers_probe.
        """
        if tree.driver_of(self.root, address) is not None:
            return
        native = self._native_driver(address)
        loaded = sorted(os.listdir(self._drivers))
        order = ([native] if native in loaded else []) + [d for d in loaded if d != native]
        for driver in order:
            if self._matches(address, driver) and self._probe_with(address, driver) == 0:
                return

    def _matches(self, address: PciAddress, driver: str) -> bool:
        """pci_match_device(): an override admits only its driver; else dynamic ids, then
        the id table."""
        override = tree.read_attr(self.root, address, "driver_override")
        if override != "(null)":
            return override == driver
        if self._ids(address) in self._state().get("dynids", {}).get(driver, []):
            return True
        return driver == self._native_driver(address)

    def _probe_with(self, address: PciAddress, driver: str) -> int:
        """pci_device_probe() and the driver's probe; 0 or the errno it fails with."""
        if not self._can_probe(address):
            return errno.ENODEV
        # vfio_pci_probe() (and every vfio-pci-core driver's): normal headers only, and
        # the function needs a group
        if self._registers_vfio(address, driver) and (
                self._is_bridge(address) or tree.group_of(self.root, address) is None):
            return errno.EINVAL
        self._attach(address, driver)
        return 0

    def _can_probe(self, address: PciAddress) -> bool:
        """pci_device_can_probe(): a VF of a PF with autoprobe off binds only by override."""
        pf = self._physfn(address)
        if pf is None:
            return True
        return (tree.read_attr(self.root, pf, "sriov_drivers_autoprobe") == "1"
                or tree.read_attr(self.root, address, "driver_override") != "(null)")

    def _attach(self, address: PciAddress, driver: str) -> None:
        native = driver == self._native_driver(address)
        static = self._static(address)
        tree.attach_driver(self.root, address, driver, tree.Children(
            self._netdev(address), tuple(static.get("net_via", ())), _mac(address),
            tuple(static.get("disks", ())), tuple(static.get("disk_via", ("host0",))),
            framebuffer=static.get("framebuffer"), drm=tuple(static.get("drm", ())),
            sound=tuple(static.get("sound", ()))) if native else tree.Children())
        self._refresh_totalvfs(address, driver)
        if native and static.get("framebuffer"):
            sim_desktop.refresh_fbcon(self.root)
        pf = self._physfn(address)
        vgpu = (self._sriov_spec(pf) or {}).get("vgpu") if pf is not None else None
        if vgpu and native and pf is not None:  # nvidia makes nvidia/ (unbind takes it)
            sim_vgpu.lay_out(tree.device_dir(self.root, address))
            sim_vgpu.refresh(tree.device_dir(self.root, pf), vgpu)
        if self._registers_vfio(address, driver):
            self._add_vfio_device(address)
        self._refresh_vfio_node(address)

    def _registers_vfio(self, address: PciAddress, driver: str) -> bool:
        """vfio-pci, a variant on vfio-pci-core (named *_vfio_pci), or a VF driver its PF's
        profile says registers VFs with VFIO itself (NVIDIA's vGPU VFs stay on nvidia)."""
        if driver == VFIO or driver.replace("-", "_").endswith("_vfio_pci"):
            return True
        pf = self._physfn(address)
        spec = self._sriov_spec(pf) if pf is not None else None
        return bool(spec and spec.get("vf_vfio_provider") and driver == spec["vf_driver"])

    def _add_vfio_device(self, address: PciAddress) -> None:
        """vfio_device_add() (Linux >= 6.1): vfio-dev/vfioN below the function and the class
        link; with IOMMUFD's device cdev (>= 6.6) its `dev` and /dev/vfio/devices/vfioN.
        N is the lowest free."""
        vdir = tree.add_vfio_device(self.root, tree.device_dir(self.root, address))
        n = int(os.path.basename(vdir)[4:])
        if self.host.get("host", {}).get("vfio_cdev"):
            undo.write_text(os.path.join(vdir, "dev"), f"511:{n}\n")
            nodes = os.path.join(self.root, "dev/vfio/devices")
            undo.makedirs(nodes, exist_ok=True)
            undo.write_bytes(os.path.join(nodes, f"vfio{n}"), b"")
            os.chmod(os.path.join(nodes, f"vfio{n}"), 0o600)

    def _drop_vfio_devices(self) -> None:
        """A function's vfio-dev went with its driver: its class link and cdev go too."""
        cls = os.path.join(self.root, "class/vfio-dev")
        for name in os.listdir(cls) if os.path.isdir(cls) else ():
            if not os.path.exists(os.path.join(cls, name)):
                undo.discard(os.path.join(cls, name))
                node = os.path.join(self.root, "dev/vfio/devices", name)
                if os.path.lexists(node):
                    undo.discard(node)

    def _detach(self, address: PciAddress) -> None:
        """device_release_driver(): a PF driver's remove disables SR-IOV first."""
        if self._sriov_spec(address) and int(tree.read_attr(self.root, address, "sriov_numvfs")):
            self._disable_vfs(address)
        tree.detach_driver(self.root, address)
        sim_desktop.refresh_fbcon(self.root)
        self._drop_vfio_devices()
        self._refresh_totalvfs(address, None)
        self._refresh_vfio_node(address)

    # -- SR-IOV ------------------------------------------------------------

    def _enable_vfs(self, pf: PciAddress, count: int) -> None:
        spec = self._pf_spec(pf)
        pf_dir = tree.device_dir(self.root, pf)
        read = lambda name: tree.read_attr(self.root, pf, name)  # noqa: E731
        vfs = []
        for index in range(count):
            vf = PciAddress.from_routing_id(pf.domain, pf.routing_id + spec["offset"]
                                            + index * spec["stride"])
            fn = tree.Function(vf, read("vendor")[2:], spec["vf_device"], int(read("class"), 16),
                               int(read("revision"), 16),
                               (read("subsystem_vendor")[2:], read("subsystem_device")[2:]),
                               int(read("numa_node")), caps=self._vf_caps(pf))
            group = tree.lowest_free_group(self.root) if self.host["iommu"] else None
            vf_dir = tree.create_function(self.root, os.path.dirname(pf_dir), fn, group)
            undo.symlink(os.path.relpath(pf_dir, vf_dir), os.path.join(vf_dir, "physfn"))
            undo.symlink(os.path.relpath(vf_dir, pf_dir), os.path.join(pf_dir, f"virtfn{index}"))
            vfs.append(vf)
        self._set_numvfs(pf, count)
        seeded = [dict(zip(("mac", "vlan"), c, strict=True)) for c in spec.get("vf_config", ())]
        self._state().setdefault("vfinfo", {})[str(pf)] = [
            _new_vf_config() | (seeded[i] if i < len(seeded) else {}) for i in range(count)]
        self._save_state()
        for vf in vfs:
            self.probe(vf)

    def _vf_caps(self, pf: PciAddress) -> configspace.Caps:
        """SR-IOV requires FLR of every VF (lab: the igb VFs' reset_method is "flr"); a VF
        shares its PF's link."""
        with open(os.path.join(tree.device_dir(self.root, pf), "config"), "rb") as f:
            link = core_configspace.parse(f.read())
        sim_link = None
        if link.link_max is not None and link.link_current is not None:
            sim_link = (*link.link_max, *link.link_current)
        return configspace.Caps("endpoint", sim_link, flr=True)

    def _disable_vfs(self, pf: PciAddress) -> None:
        pf_dir = tree.device_dir(self.root, pf)
        links = sorted((n for n in os.listdir(pf_dir) if n.startswith("virtfn")),
                       key=lambda n: int(n[6:]), reverse=True)
        vfs = [PciAddress.parse(os.path.basename(os.readlink(os.path.join(pf_dir, n))))
               for n in links]
        if any(str(tree.group_of(self.root, vf)) in self._state().get("open", {}) for vf in vfs):
            # The kernel blocks in vfio-pci's remove until the holder closes the device
            # (seen in the lab); the simulator answers instead of hanging its caller.
            raise _fail(errno.EBUSY)
        for name in links:
            vf = PciAddress.parse(os.path.basename(os.readlink(os.path.join(pf_dir, name))))
            tree.detach_driver(self.root, vf)
            self._drop_vfio_devices()
            group = tree.group_of(self.root, vf)
            tree.remove_function(self.root, vf)
            undo.discard(os.path.join(pf_dir, name))
            if group is not None:
                self._refresh_vfio_group(group)
        self._set_numvfs(pf, 0)
        self._state().get("vfinfo", {}).pop(str(pf), None)
        self._save_state()

    def _set_numvfs(self, pf: PciAddress, count: int) -> None:
        tree.set_attr(self.root, pf, "sriov_numvfs", str(count))
        cfg_path = os.path.join(tree.device_dir(self.root, pf), "config")
        with open(cfg_path, "rb") as f:
            cfg = f.read()
        undo.write_bytes(cfg_path, configspace.set_num_vfs(cfg, count))

    def _refresh_totalvfs(self, address: PciAddress, driver: str | None) -> None:
        """pci_sriov_set_totalvfs() by a PF driver; reset when it goes (pci_iov_remove)."""
        spec = self._sriov_spec(address)
        if spec:
            total = spec["driver_total"].get(driver or "", spec["total"])
            tree.set_attr(self.root, address, "sriov_totalvfs", str(total))

    # -- /dev/vfio ---------------------------------------------------------

    def _refresh_vfio_node(self, address: PciAddress) -> None:
        group = tree.group_of(self.root, address)
        if group is not None:
            self._refresh_vfio_group(group)

    def _refresh_vfio_group(self, group: int) -> None:
        """/dev/vfio/N exists while a function of group N is registered with vfio."""
        node = os.path.join(self.root, "dev/vfio", str(group))
        members = os.path.join(self.root, tree.GROUPS, str(group), "devices")
        held = os.path.isdir(members) and any(
            os.path.isdir(os.path.join(members, m, "vfio-dev")) for m in os.listdir(members))
        if held and not os.path.exists(node):
            undo.write_bytes(node, b"")
            os.chmod(node, 0o600)  # root's alone, as the kernel makes it
        elif not held and os.path.exists(node):
            undo.discard(node)

    # -- rtnetlink: VF properties and link state, as the PF's driver keeps them --

    def vf_configs(self, pf: str) -> list[dict]:
        return [dict(c) for c in self._state().get("vfinfo", {}).get(pf, [])]

    def set_vf(self, pf: str, index: int, settings: dict) -> None:
        """do_setvfinfo(): needs the PF's netdev; an index beyond numvfs is EINVAL."""
        address = PciAddress.parse(pf)
        if not self._netdev_of(address):
            raise _fail(errno.ENODEV)
        configs = self._state().get("vfinfo", {}).get(pf, [])
        if not 0 <= index < len(configs):
            raise _fail(errno.EINVAL)
        supported = self._pf_spec(address)["vf_settings"]
        if any(key not in supported for key in settings if key != "qos"):
            raise _fail(errno.EOPNOTSUPP)  # e.g. igb has no ndo_set_vf_link_state
        configs[index].update(settings)
        self._save_state()

    def set_link(self, pf: str, netdev: str, up: bool) -> None:
        ndir = os.path.join(tree.device_dir(self.root, PciAddress.parse(pf)), "net", netdev)
        if not os.path.isdir(ndir):
            raise _fail(errno.ENODEV)
        with self._reaction():
            for name, text in (("flags", "0x1003" if up else "0x1002"),
                               ("operstate", "up" if up else "down")):
                undo.write_text(os.path.join(ndir, name), text + "\n")

    def _netdev_of(self, address: PciAddress) -> str | None:
        names = os.listdir(os.path.join(tree.device_dir(self.root, address), "net")) \
            if os.path.isdir(os.path.join(tree.device_dir(self.root, address), "net")) else []
        return names[0] if names else None

    # -- processes holding /dev/vfio/N open ----------------------------------

    def hold_vfio(self, group: int, holder: str) -> None:
        """A process opens /dev/vfio/<group> (a test or the demo plays QEMU)."""
        if not os.path.exists(os.path.join(self.root, "dev/vfio", str(group))):
            raise _fail(errno.ENOENT)
        self._state().setdefault("open", {}).setdefault(str(group), []).append(holder)
        self._save_state()

    def release_vfio(self, group: int) -> None:
        self._state().get("open", {}).pop(str(group), None)
        self._save_state()

    # -- modules (hand-offs unload a host driver's) ---------------------------

    def unload_module(self, module: str) -> list[str]:
        """`modprobe -r`: its drivers go; refused while a function is bound to one of them,
        another module holds it, or it is built in. The drivers it had, to load again."""
        drivers = [d for d in sorted(os.listdir(self._drivers))
                   if d.replace("-", "_") == module or os.path.basename(os.path.realpath(
                       os.path.join(self._drivers, d, "module"))) == module]
        mdir = sim_desktop.module_dir(self.root, module)
        if not drivers or not os.path.isdir(mdir):
            raise KernelError(f"`modprobe -r {module}` failed: modprobe: FATAL: Module "
                              f"{module} is not currently loaded")
        if not os.path.exists(os.path.join(mdir, "initstate")):
            raise KernelError(f"`modprobe -r {module}` failed: modprobe: FATAL: Module "
                              f"{module} is builtin")
        holders = os.listdir(os.path.join(mdir, "holders"))
        bound = [n for d in drivers for n in os.listdir(os.path.join(self._drivers, d))
                 if tree.is_pci_name(n)]
        if holders or bound:
            raise KernelError(f"`modprobe -r {module}` failed: modprobe: FATAL: Module "
                              f"{module} is in use")
        with self._reaction():
            for d in drivers:
                undo.discard(os.path.join(self._drivers, d))
            undo.discard(mdir)
        return drivers

    def load_module(self, module: str, drivers: list[str]) -> None:
        """`modprobe`: its drivers come back and probe the functions they match."""
        with self._reaction():
            for d in drivers:
                tree.create_driver(self.root, d)
                sim_desktop.make_module(self.root, d)
        for address in self._all_devices():
            if tree.driver_of(self.root, address) is None and self._native_driver(
                    address) in drivers:
                self.probe(address)

    def vfio_holders(self) -> dict[int, list[str]]:
        return {int(g): list(who) for g, who in self._state().get("open", {}).items()}

    # -- facts about functions ---------------------------------------------

    def _exists(self, address: PciAddress) -> bool:
        return os.path.lexists(os.path.join(self.root, tree.DEVICES, str(address)))

    def _named_device(self, value: str) -> PciAddress | None:
        """bus_find_device_by_name() compares with sysfs_streq: one trailing newline is fine."""
        name = value[:-1] if value.endswith("\n") else value
        try:
            address = PciAddress.parse(name)
        except BadInput:
            return None
        return address if str(address) == name and self._exists(address) else None

    def _all_devices(self) -> list[PciAddress]:
        return sorted(PciAddress.parse(n) for n in os.listdir(os.path.join(self.root,
                                                                           tree.DEVICES)))

    def _ids(self, address: PciAddress) -> str:
        return (f"{tree.read_attr(self.root, address, 'vendor')[2:]}:"
                f"{tree.read_attr(self.root, address, 'device')[2:]}")

    def _is_bridge(self, address: PciAddress) -> bool:
        return int(tree.read_attr(self.root, address, "class"), 16) >> 8 in BRIDGE_CLASSES

    def _physfn(self, address: PciAddress) -> PciAddress | None:
        try:
            target = os.readlink(os.path.join(tree.device_dir(self.root, address), "physfn"))
        except OSError:
            return None
        return PciAddress.parse(os.path.basename(target))

    def _static(self, address: PciAddress) -> dict:
        return self.host["devices"].get(str(address), {})

    def _sriov_spec(self, address: PciAddress) -> dict | None:
        return self._static(address).get("sriov")

    def _pf_spec(self, pf: PciAddress) -> dict:
        spec = self._sriov_spec(pf)
        if spec is None:
            raise _fail(errno.EACCES)  # no sriov_* attributes on a function without SR-IOV
        return spec

    def _native_driver(self, address: PciAddress) -> str | None:
        pf = self._physfn(address)
        if pf is not None:
            return self._pf_spec(pf)["vf_driver"]
        return self._static(address).get("native_driver")

    def _netdev(self, address: PciAddress) -> str | None:
        pf = self._physfn(address)
        if pf is None:
            return self._static(address).get("netdev")
        base = self._static(pf).get("netdev")
        spec = self._pf_spec(pf)
        index = (address.routing_id - pf.routing_id - spec["offset"]) // spec["stride"]
        return f"{base}v{index}" if base else None

    def _state(self) -> dict:
        """Kernel state that sysfs does not show (dynamic ids), kept beside the tree."""
        if self._state_cache is None:
            self._state_cache = _load_state(os.path.join(self.root, STATE))
        return self._state_cache

    def _save_state(self) -> None:
        with self._reaction():  # on its own (netlink, a holder) or part of a store
            undo.write_text(os.path.join(self.root, STATE), json.dumps(self._state()))


_STATE_KEYS = {"resets", "dynids", "vfinfo", "open"}
_STATE_MAX = 1 << 20


def _load_state(path: str) -> dict:
    """The state file as the simulated kernel wrote it, or one line saying the tree is
    damaged: it is not followed through a link, and its shape is checked before use."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise _damaged(path, e.strerror or str(e)) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise _damaged(path, "not a regular file")
        raw = f.read(_STATE_MAX + 1)
    try:
        state = json.loads(raw) if len(raw) <= _STATE_MAX else None
    except (ValueError, RecursionError):
        state = None
    if not (isinstance(state, dict) and set(state) <= _STATE_KEYS
            and all(isinstance(v, dict) for v in state.values())):
        raise _damaged(path, "it does not read as the simulated kernel's state")
    return state


def _damaged(path: str, why: str) -> BadInput:
    return BadInput(f"the simulated host's kernel state {path} is damaged ({why}); make the "
                    "tree anew with `pcimgr sim create DIR --profile NAME`")


def _new_vf_config() -> dict:
    """What igb reports for a new VF: no MAC (the VF driver picks a random one), no VLAN."""
    return {"mac": "00:00:00:00:00:00", "vlan": 0, "qos": 0, "spoofchk": True, "trust": False,
            "link_state": "auto"}


def _strtobool(value: str) -> bool | None:
    """kstrtobool(): the first character decides, with on/off spelled out."""
    v = value.strip().lower()
    if v[:1] in ("1", "y") or v == "on":
        return True
    if v[:1] in ("0", "n") or v == "off":
        return False
    return None


def _parse_ids(value: str) -> str:
    """new_id/remove_id take "vendor device [...]" in hex; fewer than two fields is EINVAL."""
    fields = value.split()
    if len(fields) < 2:
        raise _fail(errno.EINVAL)
    try:
        vendor, device = int(fields[0], 16), int(fields[1], 16)
    except ValueError:
        raise _fail(errno.EINVAL) from None
    return f"{vendor:04x}:{device:04x}"


def _mac(address: PciAddress) -> str:
    a = address
    return f"52:54:{a.domain & 0xFF:02x}:{a.bus:02x}:{a.slot:02x}:{a.function:02x}"
