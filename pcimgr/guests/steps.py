"""Plan steps that change a guest: attach a device to a domain, detach it again.

They carry the connection URI and the domain's UUID, so that a journal left
by a killed run can be undone by the next one. undo() looks at the domain as
it is now and changes only what is still different.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

from pcimgr.core import hostdev_xml, pool_xml
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, LibvirtFailure
from pcimgr.core.mdev import is_uuid, mdevs_in
from pcimgr.host import libvirt_adapter
from pcimgr.host.machine import Machine
from pcimgr.host.waiting import Patience
from pcimgr.plans.step import StepBase, register


def where(live: bool, config: bool) -> str:
    return " and ".join(w for w, on in (("running guest", live), ("persistent config", config))
                        if on)


def virsh_flags(live: bool, config: bool) -> str:
    return " ".join(f for f, on in (("--live", live), ("--config", config)) if on)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> bool:
    """Polling the live XML: libvirt's DEVICE_REMOVED event would need an event loop thread."""
    deadline = time.monotonic() + timeout
    patience = Patience(what)
    while not check():
        if time.monotonic() >= deadline:
            return False
        patience.tick()
        time.sleep(0.2)
    return True


def _holds(xml: str | None, address: str, mac: str | None = None) -> bool:
    """The domain XML has the device: an interface by its MAC (pool interfaces and failover
    pairs, which name no function), anything else by the function's address."""
    if mac is not None:
        return any(i.mac == mac.lower() for i in pool_xml.interfaces(xml))
    if is_uuid(address):  # an mdev, by its UUID
        return address in mdevs_in(xml or "")
    wanted = PciAddress.parse(address)
    return any(a == wanted for a, _ in hostdev_xml.pci_devices(xml or ""))


# What the device XML of a step may be: pcimgr attaches and detaches only PCI hostdevs and
# the interfaces of pools and failover pairs. Nothing that makes libvirt or qemu open a
# host file or run a program (an ethernet interface's <script>, a <rom file>, a disk).
_INTERFACE_TYPES = ("hostdev", "network", "bridge")
_FILE_ATTRIBUTES = ("file", "path", "script", "socket", "tap", "vhost")


def check_device(xml: str, address: str, mac: str | None) -> None:
    """BadInput unless xml is one <hostdev type='pci'> or <interface> of those types, for
    this function (or the interface with this MAC), naming no host file or program."""
    try:
        element = ET.fromstring(xml)
    except ET.ParseError as e:
        raise BadInput(f"the device XML for {address} does not parse ({e})") from None
    kind = element.get("type", "")
    problem = None
    hostdev = ("hostdev", "mdev" if is_uuid(address) else "pci")
    if (element.tag, kind) != hostdev and not (
            element.tag == "interface" and kind in _INTERFACE_TYPES):
        problem = f"is a <{element.tag} type={kind!r}>"
    elif any(e.tag in ("script", "backend") or set(e.attrib) & set(_FILE_ATTRIBUTES)
             for e in element.iter()):
        problem = "names a host file or program"
    elif not _holds(f"<domain><devices>{xml}</devices></domain>", address, mac):
        problem = f"is not {_what(address, mac)}'s"
    if problem:
        raise BadInput(f"refusing the device XML for {_what(address, mac)}: it {problem}; "
                       "pcimgr attaches only PCI and mdev hostdevs and pool interfaces")


def _what(address: str, mac: str | None) -> str:
    return f"{address}: interface {mac}" if mac else address


@register
@dataclass(frozen=True)
class AttachDevice(StepBase):
    address: str
    uri: str
    domain: str
    uuid: str
    xml: str
    live: bool
    config: bool
    kind: str = "attach"
    mac: str | None = None  # an interface known by its MAC (a pool's, a failover member)

    def __post_init__(self) -> None:
        # a journal's step is data: only URIs and devices pcimgr would use itself
        libvirt_adapter.check_uri(self.uri)
        check_device(self.xml, self.address, self.mac)

    def summary(self) -> str:
        return (f"{_what(self.address, self.mac)}: attach to {self.domain} "
                f"({where(self.live, self.config)})")

    def describe(self) -> list[str]:
        return _device(self.uri, "attach", self.domain, virsh_flags(self.live, self.config),
                       self.xml)

    def apply(self, machine: Machine) -> None:
        libvirt_adapter.connect(self.uri).attach(self.uuid, self.xml, self.live, self.config)

    def undo_describe(self) -> list[str]:
        return _device(self.uri, "detach", self.uuid, virsh_flags(self.live, self.config),
                       self.xml, "   # where it still has it")

    def undo(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        now = lv.domain(self.uuid)
        live = self.live and now.active and _holds(now.live_xml, self.address, self.mac)
        config = self.config and _holds(now.config_xml, self.address, self.mac)
        if live or config:
            lv.detach(self.uuid, self.xml, live, config)


@register
@dataclass(frozen=True)
class DetachDevice(StepBase):
    """Take the device out of a domain; a live unplug is waited for, since the guest
    must acknowledge it (and one without an OS or driver never does)."""

    address: str
    uri: str
    domain: str
    uuid: str
    live_xml: str | None
    config_xml: str | None
    timeout: float
    kind: str = "detach"
    mac: str | None = None

    def __post_init__(self) -> None:
        libvirt_adapter.check_uri(self.uri)
        for xml in (self.live_xml, self.config_xml):
            if xml is not None:
                check_device(xml, self.address, self.mac)

    def summary(self) -> str:
        return (f"{_what(self.address, self.mac)}: detach from {self.domain} "
                f"({where(self.live_xml is not None, self.config_xml is not None)})")

    def describe(self) -> list[str]:
        lines = [line for xml, flag in ((self.live_xml, "--live"),
                                        (self.config_xml, "--config")) if xml is not None
                 for line in _device(self.uri, "detach", self.domain, flag, xml)]
        if self.live_xml is not None:
            lines.append(f"# then wait up to {self.timeout:g} s for the guest to release it")
        return lines

    def apply(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        if self.live_xml is not None and lv.domain(self.uuid).active:
            lv.detach(self.uuid, self.live_xml, True, False)

            def released() -> bool:
                now = lv.domain(self.uuid)
                return not now.active or not _holds(now.live_xml, self.address, self.mac)
            if not wait_until(released, self.timeout,
                              f"{self.domain} to release {_what(self.address, self.mac)}"):
                raise LibvirtFailure(
                    f"{self.domain} has not released {_what(self.address, self.mac)} "
                    f"{self.timeout:g} s after "
                    "the unplug request (a guest without an OS or driver for it never "
                    f"acknowledges one); shut the guest down, or `virsh destroy "
                    f"{self.domain}`, then run `pcimgr release {self.address}` again")
        if self.config_xml is not None:
            lv.detach(self.uuid, self.config_xml, False, True)

    def undo_describe(self) -> list[str]:
        return [line for xml, flag in ((self.config_xml, "--config"),
                                       (self.live_xml, "--live")) if xml is not None
                for line in _device(self.uri, "attach", self.uuid, flag, xml,
                                    "   # where it lacks it")]

    def undo(self, machine: Machine) -> None:
        lv = libvirt_adapter.connect(self.uri)
        now = lv.domain(self.uuid)
        if self.config_xml is not None and not _holds(now.config_xml, self.address, self.mac):
            lv.attach(self.uuid, self.config_xml, False, True)
        if self.live_xml is not None and now.active and \
                not _holds(now.live_xml, self.address, self.mac):
            lv.attach(self.uuid, self.live_xml, True, False)


def _device(uri: str, verb: str, domain: str, flags: str, xml: str, note: str = "") -> list[str]:
    """One virsh attach-device/detach-device with its XML, as --dry-run shows it."""
    return [f"virsh -c {uri} {verb}-device {domain} /dev/stdin {flags} <<EOF{note}",
            *xml.splitlines(), "EOF"]
