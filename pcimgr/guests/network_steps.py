"""Plan steps of SR-IOV pools (issue 17): a libvirt network defined or removed (a pool's
interfaces are guests/steps.py's AttachDevice and DetachDevice, known by their MAC). Undo
looks at libvirt as it is now."""

from __future__ import annotations

from dataclasses import dataclass

from pcimgr.host import libvirt_adapter
from pcimgr.host.machine import Machine
from pcimgr.plans.step import StepBase, register


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
    # libvirt checks at net-start that each address is an SR-IOV VF of its own host: a
    # simulated host's VFs are not, so there the network is only defined (autostart on)
    start: bool = True

    def __post_init__(self) -> None:
        libvirt_adapter.check_uri(self.uri)  # a journal's step is data: only our URIs

    def summary(self) -> str:
        return (f"{self.address}: libvirt network {self.name} (defined, "
                f"{'started, ' if self.start else ''}autostart)")

    def describe(self) -> list[str]:
        return [f"virsh -c {self.uri} net-define /dev/stdin <<EOF", *self.xml.splitlines(),
                "EOF", *([f"virsh -c {self.uri} net-start {self.name}"] if self.start else []),
                f"virsh -c {self.uri} net-autostart {self.name}"]

    def apply(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        if self.previous is not None:
            lv.undefine_network(self.name)  # a running network keeps its old VF list
        lv.define_network(self.xml, self.start)

    def undo_describe(self) -> list[str]:
        lines = [f"virsh -c {self.uri} net-destroy {self.name}",
                 f"virsh -c {self.uri} net-undefine {self.name}"]
        if self.previous is not None:
            lines += [f"virsh -c {self.uri} net-define /dev/stdin <<EOF",
                      *self.previous.splitlines(), "EOF",
                      *([f"virsh -c {self.uri} net-start {self.name}"] if self.start else []),
                      f"virsh -c {self.uri} net-autostart {self.name}"]
        return lines

    def undo(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        lv.undefine_network(self.name)
        if self.previous is not None:
            lv.define_network(self.previous, self.start)


@register
@dataclass(frozen=True)
class UndefineNetwork(StepBase):
    address: str
    uri: str
    name: str
    xml: str               # what it was, for undo
    kind: str = "net-undefine"
    active: bool = True    # and whether it ran

    def __post_init__(self) -> None:
        libvirt_adapter.check_uri(self.uri)

    def summary(self) -> str:
        return f"{self.address}: libvirt network {self.name} removed"

    def describe(self) -> list[str]:
        return [f"virsh -c {self.uri} net-destroy {self.name}",
                f"virsh -c {self.uri} net-undefine {self.name}"]

    def apply(self, machine: Machine) -> None:
        libvirt_adapter.connect(self.uri).undefine_network(self.name)

    def undo_describe(self) -> list[str]:
        return [f"virsh -c {self.uri} net-define /dev/stdin <<EOF   # unless it is there",
                *self.xml.splitlines(), "EOF",
                *([f"virsh -c {self.uri} net-start {self.name}"] if self.active else []),
                f"virsh -c {self.uri} net-autostart {self.name}"]

    def undo(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        if lv.network_xml(self.name) is None:
            lv.define_network(self.xml, self.active)
