"""Guest network modes, from emulated to assigned, their libvirt XML, and which to choose.

A frame from a guest to the wire crosses the emulated NIC, the hypervisor, the
host bridge and the physical NIC; each mode removes layers:

    e1000     QEMU emulates an Intel NIC: every guest driver has it, slowest
    virtio    paravirtual NIC, data path in QEMU (userspace)
    vhost     virtio with the data path in the host kernel (vhost_net)
    macvtap   virtio on a macvtap of a host NIC: skips the host bridge
    hostdev   the guest owns the hardware: a whole NIC or an SR-IOV VF
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from pcimgr.core import hostdev_xml, ifnames
from pcimgr.core.errors import BadInput

MODES = ("e1000", "virtio", "vhost", "macvtap")


def interface(mode: str, bridge: str | None, source_dev: str | None,
              mac: str | None) -> ET.Element:
    if mode == "macvtap":
        if not source_dev:
            raise BadInput("--mode macvtap needs --source-dev DEV, the host NIC to attach to")
        element = ET.Element("interface", {"type": "direct"})
        ET.SubElement(element, "source", {"dev": ifnames.check(source_dev, "--source-dev"),
                                          "mode": "bridge"})
    else:
        if not bridge:
            raise BadInput(f"--mode {mode} needs --bridge BR, the host bridge to plug into")
        element = ET.Element("interface", {"type": "bridge"})
        ET.SubElement(element, "source", {"bridge": ifnames.check(bridge, "--bridge")})
    if mac:
        element.insert(0, ET.Element("mac", {"address": mac}))
    ET.SubElement(element, "model", {"type": "e1000" if mode == "e1000" else "virtio"})
    if mode == "vhost":
        ET.SubElement(element, "driver", {"name": "vhost"})
    elif mode == "virtio":
        ET.SubElement(element, "driver", {"name": "qemu"})  # the userspace data path
    return element


@dataclass(frozen=True)
class Advice:
    mode: str                  # e1000, virtio, vhost, macvtap, sr-iov, passthrough
    why: str
    xml: str | None            # what to put in the domain; None when no device fits
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "why": self.why, "xml": self.xml,
                "notes": list(self.notes)}


# on a multi-socket host the device's DMA and interrupts should not cross the interconnect
NUMA_NOTE = ("keep the guest's vCPUs and memory on the NIC's NUMA node (`pcimgr show` has the "
             "node; `pcimgr assign` warns when the guest's pinning is elsewhere)")


@dataclass(frozen=True)
class HostAbilities:
    """What `doctor` found, reduced to what the choice depends on."""

    vhost_net: bool
    passthrough: bool
    free_vf: str | None        # a VF no guest holds, if any
    free_nic: str | None       # a NIC function that could be assigned whole, if any


def advise(guest_os: str, load: str, host: HostAbilities, bridge: str,
           source_dev: str | None) -> list[Advice]:
    """The recommendation first, then the alternatives worth knowing."""
    from pcimgr.core.address import PciAddress

    def xml(mode: str) -> str:
        return _text(interface(mode, bridge, source_dev, None))

    def assigned(address: str | None, vf: bool) -> str | None:
        if address is None:
            return None
        a = PciAddress.parse(address)
        return _text(hostdev_xml.interface(a, False) if vf else hostdev_xml.hostdev(a, False))

    virtio_fast = Advice(
        "vhost" if host.vhost_net else "virtio",
        "virtio with vhost_net: paravirtual, the data path in the host kernel; the best "
        "throughput and latency short of giving the guest hardware, and live migration works"
        if host.vhost_net else "virtio: paravirtual; /dev/vhost-net is missing, so the data "
        "path stays in QEMU (modprobe vhost_net for vhost)",
        xml("vhost" if host.vhost_net else "virtio"))
    sriov = Advice("sr-iov", "an SR-IOV VF: the guest drives the NIC's own queues, near "
                   "bare-metal speed, with a stable MAC and VLAN set by the PF; no live "
                   "migration", assigned(host.free_vf, True),
                   ("pcimgr assign VF VM --mac MAC [--vlan ID]", NUMA_NOTE))
    whole = Advice("passthrough", "a whole NIC assigned: bare-metal speed, the host loses "
                   "it; no live migration", assigned(host.free_nic, False),
                   ("pcimgr assign ADDR VM --group", NUMA_NOTE))
    hardware_ok = host.passthrough
    if guest_os == "linux":
        advice = [virtio_fast]
        if load == "high" and hardware_ok and host.free_vf:
            advice.append(sriov)
        elif load == "high" and hardware_ok and host.free_nic:
            advice.append(whole)
        advice.append(Advice("macvtap", "macvtap (virtio on a host NIC, no bridge): one layer "
                             "fewer than a bridge, but the host cannot talk to the guest "
                             "through that NIC", xml("macvtap") if source_dev else None))
        return advice
    # Windows
    windows_vf = ("Windows needs the NIC vendor's VF driver in the guest (for Intel VFs, "
                  "Intel's Ethernet Virtual Function driver)",)
    e1000 = Advice("e1000", "emulated e1000: Windows has the driver built in, and under low "
                   "load it is steady (virtio drivers on Windows have shown link flaps)",
                   xml("e1000"))
    if load == "low":
        return [e1000, with_notes(virtio_fast, ("needs the virtio-win drivers in the "
                                                     "guest",))]
    advice = []
    if hardware_ok and host.free_vf:
        advice.append(with_notes(sriov, sriov.notes + windows_vf))
    if hardware_ok and host.free_nic:
        advice.append(whole)
    advice.append(with_notes(virtio_fast, ("needs the virtio-win drivers in the guest; "
                                                "watch for link flaps",)))
    advice.append(Advice("macvtap", "not for Windows guests: macvtap with Windows is a poor "
                         "choice (host-guest traffic over that NIC fails, and it needs virtio "
                         "drivers anyway)", None))
    return advice


def with_notes(advice: Advice, notes: tuple[str, ...]) -> Advice:
    return Advice(advice.mode, advice.why, advice.xml, notes)


def _text(element: ET.Element) -> str:
    return hostdev_xml.to_string(element)
