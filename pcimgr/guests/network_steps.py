"""Plan steps of SR-IOV pools (issue 17): a libvirt network defined or removed, a guest
interface attached or detached. Like guests/steps.py they carry the URI and the domain's
UUID so a killed run's journal can be undone, and undo looks at libvirt as it is now.
An interface is known by its MAC, which pcimgr always sets."""

from __future__ import annotations

from dataclasses import dataclass

from pcimgr.core import pool_xml
from pcimgr.core.errors import LibvirtFailure
from pcimgr.guests.steps import virsh_flags, wait_until, where
from pcimgr.host import libvirt_adapter
from pcimgr.host.machine import Machine
from pcimgr.plans.step import StepBase, register


def _has_mac(xml: str | None, mac: str) -> bool:
    return any(i.mac == mac.lower() for i in pool_xml.interfaces(xml))


@register
@dataclass(frozen=True)
class DefineNetwork(StepBase):
    """address: the pool's PF."""

    address: str
    uri: str
    name: str
    xml: str
    previous: str | None   # the network this replaces (pool define again), for undo
    kind: str = "net-define"

    def summary(self) -> str:
        return f"{self.address}: libvirt network {self.name} (defined, started, autostart)"

    def describe(self) -> list[str]:
        return [f"virsh -c {self.uri} net-define /dev/stdin <<EOF", *self.xml.splitlines(),
                "EOF", f"virsh -c {self.uri} net-start {self.name}",
                f"virsh -c {self.uri} net-autostart {self.name}"]

    def apply(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        if self.previous is not None:
            lv.undefine_network(self.name)  # a running network keeps its old VF list
        lv.define_network(self.xml)

    def undo(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        lv.undefine_network(self.name)
        if self.previous is not None:
            lv.define_network(self.previous)


@register
@dataclass(frozen=True)
class UndefineNetwork(StepBase):
    address: str
    uri: str
    name: str
    xml: str               # what it was, for undo
    kind: str = "net-undefine"

    def summary(self) -> str:
        return f"{self.address}: libvirt network {self.name} removed"

    def describe(self) -> list[str]:
        return [f"virsh -c {self.uri} net-destroy {self.name}",
                f"virsh -c {self.uri} net-undefine {self.name}"]

    def apply(self, machine: Machine) -> None:
        libvirt_adapter.connect(self.uri).undefine_network(self.name)

    def undo(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        if lv.network_xml(self.name) is None:
            lv.define_network(self.xml)


@register
@dataclass(frozen=True)
class AttachInterface(StepBase):
    address: str           # the pool's PF, or the VF of a teaming pair
    uri: str
    domain: str
    uuid: str
    xml: str
    mac: str
    live: bool
    config: bool
    kind: str = "attach-interface"

    def summary(self) -> str:
        return (f"{self.address}: interface {self.mac} attached to {self.domain} "
                f"({where(self.live, self.config)})")

    def describe(self) -> list[str]:
        return [f"virsh -c {self.uri} attach-device {self.domain} /dev/stdin "
                f"{virsh_flags(self.live, self.config)} <<EOF", *self.xml.splitlines(), "EOF"]

    def apply(self, machine: Machine) -> None:
        libvirt_adapter.connect(self.uri).attach(self.uuid, self.xml, self.live, self.config)

    def undo(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        now = lv.domain(self.uuid)
        live = self.live and now.active and _has_mac(now.live_xml, self.mac)
        config = self.config and _has_mac(now.config_xml, self.mac)
        if live or config:
            lv.detach(self.uuid, self.xml, live, config)


@register
@dataclass(frozen=True)
class DetachInterface(StepBase):
    """A live unplug is waited for: the guest must let go of the VF (a guest with the
    failover driver keeps its network on the virtio member meanwhile)."""

    address: str
    uri: str
    domain: str
    uuid: str
    xml: str
    mac: str
    live: bool
    config: bool
    timeout: float
    kind: str = "detach-interface"

    def summary(self) -> str:
        return (f"{self.address}: interface {self.mac} detached from {self.domain} "
                f"({where(self.live, self.config)})")

    def describe(self) -> list[str]:
        lines = [f"virsh -c {self.uri} detach-device {self.domain} /dev/stdin "
                 f"{virsh_flags(self.live, self.config)} <<EOF", *self.xml.splitlines(), "EOF"]
        if self.live:
            lines.append(f"# then wait up to {self.timeout:g} s for the guest to release it")
        return lines

    def apply(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        if self.live and lv.domain(self.uuid).active:
            lv.detach(self.uuid, self.xml, True, False)

            def released() -> bool:
                now = lv.domain(self.uuid)
                return not now.active or not _has_mac(now.live_xml, self.mac)
            if not wait_until(released, self.timeout,
                               f"{self.domain} to release interface {self.mac}"):
                raise LibvirtFailure(
                    f"{self.domain} has not released interface {self.mac} {self.timeout:g} s "
                    "after the unplug request (a guest without an OS or driver for it never "
                    "acknowledges one); try again, or shut the guest down")
        if self.config:
            lv.detach(self.uuid, self.xml, False, True)

    def undo(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        now = lv.domain(self.uuid)
        live = self.live and now.active and not _has_mac(now.live_xml, self.mac)
        config = self.config and not _has_mac(now.config_xml, self.mac)
        if live or config:
            lv.attach(self.uuid, self.xml, live, config)
