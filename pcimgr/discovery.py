"""Read the PCI bus through the sysfs layer into a Host snapshot."""

from __future__ import annotations

import os

from pcimgr.address import PciAddress
from pcimgr.errors import BadInput, NotFound
from pcimgr.model import Host, PciDevice, SriovInfo
from pcimgr.sysfs import Sysfs

DEVICES = "bus/pci/devices"
_ATTRS = ("vendor", "device", "subsystem_vendor", "subsystem_device", "class",
          "revision", "driver_override", "numa_node", "sriov_totalvfs",
          "sriov_numvfs", "sriov_drivers_autoprobe", "sriov_offset",
          "sriov_stride", "sriov_vf_device")
_LINKS = ("driver", "iommu_group", "physfn")


def scan(sysfs: Sysfs) -> Host:
    devices = []
    for name in sysfs.list_dir(DEVICES):
        try:
            address = PciAddress.parse(name)
        except BadInput:
            continue
        device = read_device(sysfs, address)
        if device is not None:
            devices.append(device)
    devices.sort(key=lambda d: d.address)
    return Host(tuple(devices), iommu_enabled=bool(sysfs.list_dir("kernel/iommu_groups")))


def read_device(sysfs: Sysfs, address: PciAddress) -> PciDevice | None:
    """One function, or None if it is not there (or vanished while being read)."""
    node = sysfs.read_node(f"{DEVICES}/{address}", _ATTRS, _LINKS,
                           link_prefix="virtfn", subdirs=("net",))
    if node is None:
        return None
    a, links = node.attrs, node.links
    if "vendor" not in a or "device" not in a or "class" not in a:
        return None
    return PciDevice(
        address=address,
        vendor_id=_hex4(a["vendor"]),
        device_id=_hex4(a["device"]),
        subsystem_vendor_id=_hex4(a["subsystem_vendor"]) if "subsystem_vendor" in a else None,
        subsystem_device_id=_hex4(a["subsystem_device"]) if "subsystem_device" in a else None,
        class_code=int(a["class"], 16),
        revision=a["revision"][2:] if a.get("revision", "").startswith("0x") else None,
        driver=_basename(links.get("driver")),
        driver_override=_override(a.get("driver_override")),
        iommu_group=_int(_basename(links.get("iommu_group"))),
        numa_node=_numa(a.get("numa_node")),
        netdevs=tuple(node.subdirs.get("net", ())),
        sriov=_sriov(a, links),
        physfn=_address_link(links.get("physfn")),
    )


def require(host: Host, address: PciAddress) -> PciDevice:
    device = host.get(address)
    if device is None:
        raise NotFound(f"no PCI function {address} on this host; "
                       "`pcimgr list --all` shows the functions there are")
    return device


def _sriov(a: dict[str, str], links: dict[str, str]) -> SriovInfo | None:
    if "sriov_totalvfs" not in a:
        return None
    vfs = sorted(((int(k[6:]), _address_link(v)) for k, v in links.items()
                  if k.startswith("virtfn") and k[6:].isdigit()), key=lambda kv: kv[0])
    autoprobe = a.get("sriov_drivers_autoprobe")
    vf_device = a.get("sriov_vf_device")
    return SriovInfo(
        totalvfs=_int(a["sriov_totalvfs"]) or 0,
        numvfs=_int(a.get("sriov_numvfs")) or 0,
        drivers_autoprobe=None if autoprobe is None else autoprobe == "1",
        vf_device_id=vf_device.lower().zfill(4) if vf_device else None,
        offset=_int(a.get("sriov_offset")),
        stride=_int(a.get("sriov_stride")),
        vfs=tuple(addr for _, addr in vfs if addr is not None),
    )


def _hex4(text: str) -> str:
    return text.lower().removeprefix("0x").zfill(4)


def _basename(target: str | None) -> str | None:
    return os.path.basename(target) if target else None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _numa(text: str | None) -> int | None:
    node = _int(text)
    return None if node is None or node < 0 else node


def _override(text: str | None) -> str | None:
    return None if text in (None, "", "(null)") else text


def _address_link(target: str | None) -> PciAddress | None:
    if not target:
        return None
    try:
        return PciAddress.parse(os.path.basename(target))
    except BadInput:
        return None
