"""Moving one function between drivers the safe way: driver_override, unbind, drivers_probe.

Never new_id: it binds every unbound function with the same id. Every move is
verified by reading the driver link back, and can be undone to the driver and
override the function had before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pcimgr.core.errors import KernelError
from pcimgr.core.viability import harmless_name
from pcimgr.host import discovery
from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import Sysfs, device_path
from pcimgr.host.uevents import Watcher
from pcimgr.plans.records import Changes, device_rel
from pcimgr.plans.step import StepBase, register

BIND_TIMEOUT = 5.0
CLEAR = "\n"  # an empty write never reaches the kernel; a newline clears the override


def current_driver(sysfs: Sysfs, address: str) -> str | None:
    link = sysfs.read_link(device_path(address, "driver"))
    return link.rsplit("/", 1)[-1] if link else None


def current_override(sysfs: Sysfs, address: str) -> str | None:
    return discovery.override(sysfs.read_attr(device_path(address, "driver_override")))


@register
@dataclass(frozen=True)
class BindDriver(StepBase):
    """Put `address` on `target` with `target_override` (target None: no driver).

    undo() restores the driver and override it had before.
    """

    address: str
    target: str | None
    target_override: str | None
    original_driver: str | None
    original_override: str | None
    kind: str = "bind"

    def summary(self) -> str:
        was, now = self.original_driver or "no driver", self.target or "no driver"
        return f"{self.address}: {was} -> {now}"

    def describe(self) -> list[str]:
        root = "/sys/bus/pci"
        lines = []
        if self.target_override != self.original_override:
            lines.append(_override_line(self.address, self.target_override))
        if self.original_driver:
            lines.append(f"echo {self.address} > {root}/drivers/{self.original_driver}/unbind")
        if self.target:
            lines.append(f"echo {self.address} > {root}/drivers_probe"
                         f"   # then check that driver -> {self.target}")
        return lines

    def apply(self, machine: Machine) -> None:
        move(machine, self.address, self.target, self.target_override)

    def undo(self, machine: Machine) -> None:
        move(machine, self.address, self.original_driver, self.original_override)

    def undo_moves(self) -> tuple[tuple[str, str | None], ...]:
        return ((self.address, self.original_driver),)

    def undo_describe(self) -> list[str]:
        return replace(self, target=self.original_driver, target_override=self.original_override,
                       original_driver=self.target,
                       original_override=self.target_override).describe()

    def remember(self, records: Changes) -> None:
        rel = device_rel(self.address)
        record = records.get(rel)
        if record is not None and self.target == record["driver"]:
            records.set(rel, None)  # given back
        elif record is None and not harmless_name(self.original_driver):
            # the first time pcimgr moves it: remember where it came from (None: no driver)
            records.set(rel, {"driver": self.original_driver,
                              "override": self.original_override})


def _override_line(address: str, override: str | None) -> str:
    path = f"/sys/bus/pci/devices/{address}/driver_override"
    # a bare `echo` writes the newline that clears it
    return f"echo '{override}' > {path}" if override else f"echo > {path}"


def move(machine: Machine, address: str, driver: str | None, override: str | None) -> None:
    sysfs = machine.sysfs
    """Idempotent: from whatever state the function is in, end on `driver` with `override`."""
    dev = device_path(address)
    if current_override(sysfs, address) != override:
        sysfs.write_attr(f"{dev}/driver_override", override or CLEAR)
    bound = current_driver(sysfs, address)
    if bound == driver:
        return
    if bound is not None:
        sysfs.write_attr(f"bus/pci/drivers/{bound}/unbind", address)
    if driver is None:
        return
    sysfs.write_attr("bus/pci/drivers_probe", address)
    if not _wait_for(machine, address, driver, BIND_TIMEOUT / 2) and override is None:
        # the probe chose another driver (the original came by an explicit bind): bind it
        chosen = current_driver(sysfs, address)
        if chosen is not None:
            sysfs.write_attr(f"bus/pci/drivers/{chosen}/unbind", address)
        sysfs.write_attr(f"bus/pci/drivers/{driver}/bind", address)
    if not _wait_for(machine, address, driver, BIND_TIMEOUT / 2):
        raise KernelError(f"{address} did not bind to {driver} within {BIND_TIMEOUT:g} s "
                          f"(it is on {current_driver(sysfs, address) or 'no driver'}); "
                          "see `dmesg` for the driver's probe error")


def _wait_for(machine: Machine, address: str, driver: str, seconds: float) -> bool:
    with Watcher(machine) as watcher:
        return watcher.wait(lambda: current_driver(machine.sysfs, address) == driver, seconds,
                            f"{address} to bind to {driver}")


@register
@dataclass(frozen=True)
class Reprobe(StepBase):
    """Clear the override, unbind and let the kernel choose the native driver.

    For functions pcimgr never moved, whose original driver it does not know.
    """

    address: str
    original_driver: str | None
    original_override: str | None
    kind: str = "reprobe"

    @property
    def target(self) -> str:
        return "the kernel's choice"

    def summary(self) -> str:
        return f"{self.address}: {self.original_driver or 'no driver'} -> {self.target}"

    def describe(self) -> list[str]:
        root = "/sys/bus/pci"
        lines = [_override_line(self.address, None)]
        if self.original_driver:
            lines.append(f"echo {self.address} > {root}/drivers/{self.original_driver}/unbind")
        lines.append(f"echo {self.address} > {root}/drivers_probe")
        return lines

    def apply(self, machine: Machine) -> None:
        sysfs = machine.sysfs
        dev = device_path(self.address)
        if current_override(sysfs, self.address) is not None:
            sysfs.write_attr(f"{dev}/driver_override", CLEAR)
        bound = current_driver(sysfs, self.address)
        if bound is not None:
            sysfs.write_attr(f"bus/pci/drivers/{bound}/unbind", self.address)
        sysfs.write_attr("bus/pci/drivers_probe", self.address)

    def undo(self, machine: Machine) -> None:
        move(machine, self.address, self.original_driver, self.original_override)

    def undo_moves(self) -> tuple[tuple[str, str | None], ...]:
        return ((self.address, self.original_driver),)

    def undo_describe(self) -> list[str]:
        return BindDriver(self.address, self.original_driver, self.original_override, None,
                          None).describe()

    def remember(self, records: Changes) -> None:
        records.set(device_rel(self.address), None)  # back where the kernel puts it
