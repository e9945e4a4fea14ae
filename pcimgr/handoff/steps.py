"""The steps a hand-off takes beyond moving functions between drivers: the display manager
stopped, fbcon taken off a virtual console, the boot framebuffer's driver unbound, the host
driver's module unloaded, hugepages reserved, the host's slices kept off CPUs. Each is
verified after it acts, bounded in time, and undone by putting back what it found.

Every field comes back from a journal or a hand-off record, which are data on disk: each
kind checks its fields when read back (from_json) before root acts on them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, fields
from typing import Any

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, KernelError
from pcimgr.core.handoff import SIZES, check_unit, check_vm, parse_cpus, size_name
from pcimgr.host import display
from pcimgr.host.machine import Machine
from pcimgr.plans.step import StepBase, register

UNIT_TIMEOUT = 90.0      # a display manager ends its sessions first
SESSION_TIMEOUT = 15.0   # and they close their nodes a moment after it stopped
PROPERTY_TIMEOUT = 15.0
MODULE_TIMEOUT = 60.0
SLICES = ("system.slice", "user.slice", "init.scope")
_VTCON = re.compile(r"vtcon\d{1,3}")
_PLATFORM = re.compile(r"(simple|efi|vesa)-framebuffer\.\d{1,3}")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_NODE = re.compile(r"/dev/(dri/(card|renderD)\d{1,4}|fb\d{1,3}|snd/[A-Za-z]+\d{1,3}[A-Za-z0-9]*"
                   r"|nvidia(\d{1,3}|ctl|-modeset))")


class Checked(StepBase):
    """from_json: the journal's fields, each held to what the kind accepts (their profile
    holds them to what it allows: planner.vet_steps)."""

    address: str
    vm: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Any:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if set(data) - names:
            raise ValueError(f"{data.get('kind')} step has unknown fields "
                             f"{sorted(set(data) - names)}")
        try:
            step = cls(**data)
            PciAddress.parse(step.address)
            check_vm(step.vm)
            step.check()
        except (BadInput, TypeError, AttributeError) as e:
            raise ValueError(f"{data.get('kind')} step: {e}") from None
        return step

    def check(self) -> None:
        """BadInput naming a field the kind does not accept."""


def _name(value: object, what: str, pattern: re.Pattern[str] = _NAME) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadInput(f"{what} {value!r}")


@register
@dataclass(frozen=True)
class StopUnit(Checked):
    """Stop a service (the display manager) whose processes or sessions hold the functions'
    nodes, then wait for every holder of those nodes to be gone; undo starts it again."""

    address: str
    vm: str             # the guest whose hand-off it is: its profile allows it
    unit: str
    nodes: tuple[str, ...] = ()  # the functions' device nodes, which nobody may hold after
    kind: str = "stop-unit"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Any:
        nodes = data.get("nodes", [])
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise ValueError("stop-unit step: 'nodes' is not a list of device nodes")
        return super().from_json(data | {"nodes": tuple(nodes)})

    def check(self) -> None:
        check_unit(self.unit)
        for node in self.nodes:
            _name(node, "device node", _NODE)

    def summary(self) -> str:
        return f"stop {self.unit} (it holds {self.address}'s nodes)"

    def describe(self) -> list[str]:
        return [f"systemctl stop {self.unit}   # then check it is inactive"]

    def apply(self, machine: Machine) -> None:
        machine.control_unit("stop", self.unit, UNIT_TIMEOUT)
        state = machine.unit_state(self.unit)
        if state is not None and state.running:
            raise KernelError(f"{self.unit} is still {state.active} after `systemctl stop`")
        deadline = time.monotonic() + SESSION_TIMEOUT  # its sessions end after it
        while held := machine.node_holders(list(self.nodes)):
            if time.monotonic() > deadline:
                raise KernelError(
                    f"after `systemctl stop {self.unit}`, " + "; ".join(
                        f"{n} is still open by {', '.join(map(str, hs))}"
                        for n, hs in sorted(held.items())) + "; stop them first")
            time.sleep(0.2)

    def undo(self, machine: Machine) -> None:
        state = machine.unit_state(self.unit)
        if state is None or not state.running:
            machine.control_unit("start", self.unit, UNIT_TIMEOUT)

    def undo_describe(self) -> list[str]:
        return [f"systemctl start {self.unit}"]


@register
@dataclass(frozen=True)
class UnbindConsole(Checked):
    """Take fbcon off its virtual console (vtconN/bind = 0), which lets the framebuffer
    go; undo binds it again."""

    address: str
    vm: str             # the guest whose hand-off it is: its profile allows it
    vtcon: str
    kind: str = "unbind-console"

    def check(self) -> None:
        _name(self.vtcon, "virtual console", _VTCON)

    def _bind(self) -> str:
        return f"class/vtconsole/{self.vtcon}/bind"

    def summary(self) -> str:
        return f"unbind the framebuffer console {self.vtcon} (on {self.address})"

    def describe(self) -> list[str]:
        return [f"echo 0 > /sys/{self._bind()}"]

    def apply(self, machine: Machine) -> None:
        self._set(machine, "0")

    def undo(self, machine: Machine) -> None:
        if machine.sysfs.exists(self._bind()):  # fbcon may be gone with its framebuffer
            self._set(machine, "1")

    def _set(self, machine: Machine, value: str) -> None:
        machine.sysfs.write_attr(self._bind(), value)
        if machine.sysfs.read_attr(self._bind()) != value:
            raise KernelError(f"/sys/{self._bind()} does not read {value} after writing it")

    def undo_describe(self) -> list[str]:
        return [f"echo 1 > /sys/{self._bind()}"]


@register
@dataclass(frozen=True)
class UnbindPlatform(Checked):
    """Unbind the boot framebuffer's driver (efifb, vesafb, simplefb) from sysfb's platform
    device, so its claim on the function's BAR goes; undo binds it again."""

    address: str
    vm: str             # the guest whose hand-off it is: its profile allows it
    device: str
    driver: str
    kind: str = "unbind-platform"

    def check(self) -> None:
        _name(self.device, "platform framebuffer", _PLATFORM)
        _name(self.driver, "driver")

    def _drv(self, attr: str) -> str:
        return f"bus/platform/drivers/{self.driver}/{attr}"

    def summary(self) -> str:
        return f"unbind {self.driver} from {self.device} (the boot framebuffer on {self.address})"

    def describe(self) -> list[str]:
        return [f"echo {self.device} > /sys/{self._drv('unbind')}"]

    def _bound(self, machine: Machine) -> bool:
        return machine.sysfs.exists(self._drv(self.device))

    def apply(self, machine: Machine) -> None:
        machine.sysfs.write_attr(self._drv("unbind"), self.device)
        if self._bound(machine):
            raise KernelError(f"{self.device} is still on {self.driver} after the unbind")

    def undo(self, machine: Machine) -> None:
        if not self._bound(machine):
            machine.sysfs.write_attr(self._drv("bind"), self.device)

    def undo_describe(self) -> list[str]:
        return [f"echo {self.device} > /sys/{self._drv('bind')}"]


@register
@dataclass(frozen=True)
class UnloadModule(Checked):
    """`modprobe -r` the host driver's module once its functions left it (the profile asked:
    some drivers will not let a device go otherwise); undo loads it, which probes them."""

    address: str
    vm: str             # the guest whose hand-off it is: its profile allows it
    kernel_module: str  # not "module": a journal entry names its step's Python module so
    kind: str = "unload-module"

    def check(self) -> None:
        _name(self.kernel_module, "module")

    def summary(self) -> str:
        return f"unload the module {self.kernel_module} (the host driver of {self.address})"

    def describe(self) -> list[str]:
        return [f"modprobe -r {self.kernel_module}"]

    def apply(self, machine: Machine) -> None:
        machine.unload_module(self.kernel_module, MODULE_TIMEOUT)
        if machine.sysfs.exists(f"module/{self.kernel_module}/initstate"):
            raise KernelError(f"the module {self.kernel_module} is still loaded after "
                              "modprobe -r")

    def undo(self, machine: Machine) -> None:
        if not machine.sysfs.exists(f"module/{self.kernel_module}/initstate"):
            machine.load_module(self.kernel_module)

    def undo_describe(self) -> list[str]:
        return [f"modprobe {self.kernel_module}"]


@register
@dataclass(frozen=True)
class ReserveHugepages(Checked):
    """Raise the pool of SIZE pages to TARGET (the guest's memory, pinned by VFIO, must not
    wait on compaction at start); undo takes back what it added."""

    address: str
    vm: str             # the guest whose hand-off it is: its profile allows it
    size_kb: int
    before: int
    target: int
    kind: str = "hugepages"

    def check(self) -> None:
        if self.size_kb not in SIZES.values() or not 0 <= self.before < self.target <= 1 << 24:
            raise BadInput(f"hugepage pool {self.size_kb} kB from {self.before} to {self.target}")

    def _nr(self) -> str:
        return f"kernel/mm/hugepages/hugepages-{self.size_kb}kB/nr_hugepages"

    def summary(self) -> str:
        return (f"reserve {self.target - self.before} hugepages of {size_name(self.size_kb)} "
                f"(pool {self.before} -> {self.target})")

    def describe(self) -> list[str]:
        return [f"echo {self.target} > /sys/{self._nr()}   # then check it reads {self.target}"]

    def apply(self, machine: Machine) -> None:
        machine.sysfs.write_attr(self._nr(), str(self.target))
        pool = display.hugepage_pool(machine.sysfs, self.size_kb)
        got = pool.total if pool else 0
        if got < self.target:
            raise KernelError(f"the kernel found {got} of {self.target} hugepages of "
                              f"{size_name(self.size_kb)} (memory too fragmented); free memory "
                              "or reserve them at boot (hugepages= on the command line)")

    def undo(self, machine: Machine) -> None:
        """Take back what it added, from the pool as it is now (another hand-off may have
        added its own since); never more than it added, never below zero."""
        pool = display.hugepage_pool(machine.sysfs, self.size_kb)
        now = pool.total if pool else self.target
        machine.sysfs.write_attr(self._nr(), str(max(0, now - (self.target - self.before))))

    def undo_describe(self) -> list[str]:
        return [f"echo $(( $(cat /sys/{self._nr()}) - {self.target - self.before} )) > "
                f"/sys/{self._nr()}"]


@register
@dataclass(frozen=True)
class RestrictCpus(Checked):
    """Keep a slice's processes on the host's CPUs (`systemctl set-property --runtime UNIT
    AllowedCPUs=...`); undo puts back what it had ("" for no restriction)."""

    address: str
    vm: str             # the guest whose hand-off it is: its profile allows it
    unit: str
    allowed: str
    before: str
    kind: str = "allowed-cpus"

    def check(self) -> None:
        if self.unit not in SLICES:
            raise BadInput(f"slice {self.unit!r}")
        parse_cpus(self.allowed)
        if self.before:
            parse_cpus(self.before)

    def summary(self) -> str:
        return f"keep {self.unit} on CPUs {self.allowed}"

    def describe(self) -> list[str]:
        return [f"systemctl set-property --runtime {self.unit} AllowedCPUs={self.allowed}"]

    def apply(self, machine: Machine) -> None:
        machine.set_unit_property(self.unit, "AllowedCPUs", self.allowed, PROPERTY_TIMEOUT)

    def undo(self, machine: Machine) -> None:
        machine.set_unit_property(self.unit, "AllowedCPUs", self.before, PROPERTY_TIMEOUT)

    def undo_describe(self) -> list[str]:
        return [f"systemctl set-property --runtime {self.unit} AllowedCPUs={self.before}"]
