"""Directory operations that lay out a simulated /sys the way the kernel does.

Shared by the builder (a host's first state) and the simulated kernel (the
state after writes), so both produce exactly the same shapes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pcimgr.core.address import PciAddress
from pcimgr.sim import configspace, undo
from pcimgr.sim import marker as sim_marker

DEVICES = "bus/pci/devices"
DRIVERS = "bus/pci/drivers"
GROUPS = "kernel/iommu_groups"
READ_ONLY = frozenset({"vendor", "device", "class", "subsystem_vendor", "subsystem_device",
                       "revision", "modalias", "irq", "resource", "sriov_totalvfs",
                       "sriov_offset", "sriov_stride", "sriov_vf_device", "boot_vga",
                       "local_cpulist", "current_link_speed", "current_link_width",
                       "max_link_speed", "max_link_width"})


@dataclass(frozen=True)
class Function:
    """What a new function directory needs."""

    address: PciAddress
    vendor: str
    device: str
    class_code: int
    revision: int
    subsystem: tuple[str, str]
    numa_node: int
    bridge: bool = False
    secondary_bus: int = 0
    boot_vga: bool | None = None
    sriov: tuple[int, int, int, int, str] | None = None  # total, offset, stride, numvfs, vf_device
    caps: configspace.Caps = configspace.Caps()
    # Linux decides a function's reset methods once, when it enumerates it: "bus" only
    # while no other function sits on its bus yet (the lab's second e1000 on a bus has
    # none; the first keeps "bus" although a bus reset now hits both)
    alone_on_bus: bool = False


def _write(path: str, text: str) -> None:
    undo.write_text(path, text)


def _link(target: str, link: str) -> None:
    undo.symlink(os.path.relpath(target, os.path.dirname(link)), link)


def marker(root: str) -> dict:
    return sim_marker.read(root)


def device_dir(root: str, address: PciAddress | str) -> str:
    return os.path.realpath(os.path.join(root, DEVICES, str(address)))


def root_bus_dir(root: str, domain: int) -> str:
    path = os.path.join(root, "devices", f"pci{domain:04x}:00")
    undo.makedirs(path, exist_ok=True)
    return path


def modalias(fn: Function) -> str:
    sv, sd = fn.subsystem
    c = fn.class_code
    return (f"pci:v0000{fn.vendor.upper()}d0000{fn.device.upper()}sv0000{sv.upper()}"
            f"sd0000{sd.upper()}bc{c >> 16:02X}sc{c >> 8 & 0xFF:02X}i{c & 0xFF:02X}")


def create_function(root: str, parent_dir: str, fn: Function, group: int | None) -> str:
    path = os.path.join(parent_dir, str(fn.address))
    undo.mkdir(path)
    sv, sd = fn.subsystem
    attrs = {
        "vendor": f"0x{fn.vendor}", "device": f"0x{fn.device}",
        "subsystem_vendor": f"0x{sv}", "subsystem_device": f"0x{sd}",
        "class": f"0x{fn.class_code:06x}", "revision": f"0x{fn.revision:02x}",
        "numa_node": str(fn.numa_node), "driver_override": "(null)",
        "modalias": modalias(fn), "irq": "0", "enable": "1",
        "local_cpulist": "0-1", "resource": "\n".join([" ".join(["0x0000000000000000"] * 3)] * 13),
        # write-only in the kernel; present so that writes to them find a file
        "remove": "", "rescan": "", "reset": "",
    }
    if fn.boot_vga is not None:
        attrs["boot_vga"] = "1" if fn.boot_vga else "0"
    attrs.update(_link_attrs(fn.caps))
    methods = reset_methods(fn.caps, fn.alone_on_bus and not fn.bridge)
    if methods:
        attrs["reset_method"] = " ".join(methods)
    else:
        del attrs["reset"]  # the kernel shows `reset` only where some method works
    sriov_cap = None
    if fn.sriov is not None:
        total, offset, stride, numvfs, vf_device = fn.sriov
        attrs.update(sriov_totalvfs=str(total), sriov_numvfs=str(numvfs),
                     sriov_offset=str(offset), sriov_stride=str(stride),
                     sriov_vf_device=vf_device, sriov_drivers_autoprobe="1")
        sriov_cap = (total, total, offset, stride, int(vf_device, 16))
    for name, text in attrs.items():
        _write(os.path.join(path, name), text + "\n" if text else "")
    write_uevent(path, fn, None)
    undo.write_bytes(os.path.join(path, "config"), configspace.build(
        int(fn.vendor, 16), int(fn.device, 16), fn.class_code, fn.revision,
        int(sv, 16), int(sd, 16), fn.bridge, fn.secondary_bus, fn.secondary_bus,
        sriov_cap, fn.caps))
    _link(os.path.join(root, "bus/pci"), os.path.join(path, "subsystem"))
    _link(path, os.path.join(root, DEVICES, str(fn.address)))
    if group is not None:
        join_group(root, fn.address, group)
    return path


def reset_methods(caps: configspace.Caps, bus: bool) -> list[str]:
    """In the kernel's order (pci_reset_fn_methods): FLR, PM (a D3hot->D0 cycle that
    resets, i.e. No_Soft_Reset clear), then a reset of the bus the function is on."""
    methods = ["flr"] if caps.flr else []
    if caps.pm_soft_reset:
        methods.append("pm")
    if bus:
        methods.append("bus")
    return methods


def _link_attrs(caps: configspace.Caps) -> dict[str, str]:
    """The link files of a PCIe function; an integrated endpoint has no link to show
    (Linux 6.1 in the lab: "Unknown", width 0, max width 255)."""
    if caps.port_type is None:
        return {}
    if caps.port_type == "integrated-endpoint":
        return {"current_link_speed": "Unknown", "current_link_width": "0",
                "max_link_speed": "Unknown", "max_link_width": "255"}
    max_speed, max_width, speed, width = caps.link or (2.5, 1, 2.5, 1)
    return {"current_link_speed": f"{speed:.1f} GT/s PCIe", "current_link_width": str(width),
            "max_link_speed": f"{max_speed:.1f} GT/s PCIe", "max_link_width": str(max_width)}


def write_uevent(path: str, fn: Function | None, driver: str | None) -> None:
    """uevent as the kernel prints it; DRIVER= only while bound."""
    lines = []
    old = _read(os.path.join(path, "uevent")).splitlines()
    if driver:
        lines.append(f"DRIVER={driver}")
    if fn is not None:
        sv, sd = fn.subsystem
        lines += [f"PCI_CLASS={fn.class_code:X}",
                  f"PCI_ID={fn.vendor.upper()}:{fn.device.upper()}",
                  f"PCI_SUBSYS_ID={sv.upper()}:{sd.upper()}",
                  f"PCI_SLOT_NAME={fn.address}", f"MODALIAS={modalias(fn)}"]
    else:
        lines += [line for line in old if not line.startswith("DRIVER=")]
    _write(os.path.join(path, "uevent"), "\n".join(lines) + "\n")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def remove_function(root: str, address: PciAddress) -> None:
    path = device_dir(root, address)
    leave_group(root, address)
    undo.discard(os.path.join(root, DEVICES, str(address)))
    undo.discard(path)


def join_group(root: str, address: PciAddress, group: int) -> None:
    gdir = os.path.join(root, GROUPS, str(group))
    if not os.path.isdir(gdir):
        undo.makedirs(os.path.join(gdir, "devices"))
        _write(os.path.join(gdir, "type"), "DMA\n")
        _write(os.path.join(gdir, "reserved_regions"),
               "0x00000000fee00000 0x00000000feefffff msi\n")
    path = device_dir(root, address)
    _link(path, os.path.join(gdir, "devices", str(address)))
    _link(gdir, os.path.join(path, "iommu_group"))


def group_of(root: str, address: PciAddress) -> int | None:
    try:
        return int(os.path.basename(os.readlink(
            os.path.join(device_dir(root, address), "iommu_group"))))
    except OSError:
        return None


def leave_group(root: str, address: PciAddress) -> None:
    group = group_of(root, address)
    if group is None:
        return
    gdir = os.path.join(root, GROUPS, str(group))
    undo.discard(os.path.join(gdir, "devices", str(address)))
    undo.discard(os.path.join(device_dir(root, address), "iommu_group"))
    if not os.listdir(os.path.join(gdir, "devices")):
        undo.discard(gdir)


def add_vfio_device(root: str, owner: str) -> str:
    """vfio_device_add() (Linux >= 6.1): OWNER/vfio-dev/vfioN, N the lowest free, with the
    entries Linux 6.1 gives it (device, power, subsystem, uevent; the lab), and its link in
    class/vfio-dev. The directory made."""
    cls = os.path.join(root, "class/vfio-dev")
    undo.makedirs(cls, exist_ok=True)
    used = {int(n[4:]) for n in os.listdir(cls) if n[4:].isdigit()}
    n = next(i for i in range(len(used) + 1) if i not in used)
    vdir = os.path.join(owner, "vfio-dev", f"vfio{n}")
    undo.makedirs(os.path.join(vdir, "power"))
    # as Linux writes it: up to the owner's parent and down again (never a bare "../..")
    undo.symlink(f"../../../{os.path.basename(owner)}", os.path.join(vdir, "device"))
    _link(cls, os.path.join(vdir, "subsystem"))
    _write(os.path.join(vdir, "uevent"), "")
    _link(vdir, os.path.join(cls, f"vfio{n}"))
    return vdir


def lowest_free_group(root: str) -> int:
    """Group numbers come from an IDA in the kernel: the lowest unused one."""
    used = {int(n) for n in os.listdir(os.path.join(root, GROUPS)) if n.isdigit()}
    n = 0
    while n in used:
        n += 1
    return n


def create_driver(root: str, name: str) -> None:
    path = os.path.join(root, DRIVERS, name)
    undo.makedirs(path)
    for attr in ("bind", "unbind", "new_id", "remove_id", "uevent"):
        _write(os.path.join(path, attr), "")


def driver_of(root: str, address: PciAddress) -> str | None:
    try:
        return os.path.basename(os.readlink(os.path.join(device_dir(root, address), "driver")))
    except OSError:
        return None


@dataclass(frozen=True)
class Children:
    """What a native driver makes below its function, as the profile says.

    net_via: devices between the function and its interface (virtio: ("virtio2",);
    a USB NIC: ("usb1", "1-1", "1-1:1.1")). disks: a disk and its partitions;
    disk_via: the devices above the disk (a SCSI host: ("virtio3", "host0", ...)),
    or ("nvme-subsystem",) for an NVMe namespace under native multipath, which
    lives outside the PCI tree and is reached through the controller nvme<N>.
    """

    netdev: str | None = None
    net_via: tuple[str, ...] = ()
    mac: str = "52:54:00:00:00:00"
    disks: tuple[str, ...] = ()
    disk_via: tuple[str, ...] = ("host0",)
    disk_major: int = 259
    framebuffer: str | None = None
    drm: tuple[str, ...] = ()       # card0, renderD128: a DRM driver's nodes
    sound: tuple[str, ...] = ()     # an ALSA card and its nodes: card1, controlC1, pcmC1D3p


NVME_SUBSYSTEM = "nvme-subsystem"


def attach_driver(root: str, address: PciAddress, driver: str, children: Children) -> None:
    path = device_dir(root, address)
    ddir = os.path.join(root, DRIVERS, driver)
    _link(ddir, os.path.join(path, "driver"))
    _link(path, os.path.join(ddir, str(address)))
    write_uevent(path, None, driver)
    if children.netdev:
        ndir = os.path.join(path, *children.net_via, "net", children.netdev)
        undo.makedirs(ndir)
        _write(os.path.join(ndir, "address"), children.mac + "\n")
        _write(os.path.join(ndir, "operstate"), "up\n")
        _write(os.path.join(ndir, "flags"), "0x1003\n")  # IFF_UP | IFF_BROADCAST | IFF_MULTICAST
        cls = os.path.join(root, "class/net")
        undo.makedirs(cls, exist_ok=True)
        _link(ndir, os.path.join(cls, children.netdev))
    if children.disks:
        _make_disks(root, path, children)
    if children.framebuffer:
        fb = os.path.join(path, "graphics", children.framebuffer)
        undo.makedirs(fb)
        undo.makedirs(os.path.join(root, "class/graphics"), exist_ok=True)
        _link(fb, os.path.join(root, "class/graphics", children.framebuffer))
    for node in children.drm:
        undo.makedirs(os.path.join(path, "drm", node))
    if children.sound:
        card, *nodes = children.sound
        for node in nodes:
            undo.makedirs(os.path.join(path, "sound", card, node))


def _make_disks(root: str, path: str, c: Children) -> None:
    disk = c.disks[0]
    if c.disk_via == (NVME_SUBSYSTEM,):
        # nvme0n1 -> controller nvme0, subsystem nvme-subsys0; the per-path device
        # nvme0c0n1 hides below the controller (Linux 6.1 in the lab)
        n = disk[4:disk.index("n", 4)]
        controller = os.path.join(path, "nvme", f"nvme{n}")
        undo.makedirs(controller)
        _block(root, os.path.join(controller, f"nvme{n}c{n}n1"), c.disk_major, 1000)
        subsys = os.path.join(root, "devices/virtual", NVME_SUBSYSTEM, f"nvme-subsys{n}")
        undo.makedirs(subsys)
        _link(controller, os.path.join(subsys, f"nvme{n}"))
        disk_dir = os.path.join(subsys, disk)
    else:
        disk_dir = os.path.join(path, *c.disk_via, "block", disk)
    _block(root, disk_dir, c.disk_major, 0)
    for minor, name in enumerate(c.disks[1:], 1):
        _block(root, os.path.join(disk_dir, name), c.disk_major, minor, partition=minor)


def _block(root: str, bdir: str, major: int, minor: int, partition: int | None = None) -> None:
    undo.makedirs(os.path.join(bdir, "holders"))
    undo.makedirs(os.path.join(bdir, "slaves"))
    _write(os.path.join(bdir, "dev"), f"{major}:{minor}\n")
    if partition is not None:
        _write(os.path.join(bdir, "partition"), f"{partition}\n")
    undo.makedirs(os.path.join(root, "class/block"), exist_ok=True)
    _link(bdir, os.path.join(root, "class/block", os.path.basename(bdir)))


def detach_driver(root: str, address: PciAddress) -> None:
    """Remove the driver link and everything the driver made: interfaces, disks, their
    places in stacks above them (the kernel takes a vanished port out of its bond)."""
    path = device_dir(root, address)
    driver = driver_of(root, address)
    if driver is None:
        return
    undo.discard(os.path.join(path, "driver"))
    undo.discard(os.path.join(root, DRIVERS, driver, str(address)))
    write_uevent(path, None, None)
    for name in os.listdir(path):
        child = os.path.join(path, name)
        if os.path.isdir(child) and not os.path.islink(child) and name not in _KEPT \
                and not _PCI_NAME.fullmatch(name):  # a bridge's functions stay
            undo.discard(child)
    for subsys in _list(os.path.join(root, "devices/virtual", NVME_SUBSYSTEM)):
        sdir = os.path.join(root, "devices/virtual", NVME_SUBSYSTEM, subsys)
        if not any(os.path.exists(os.path.join(sdir, n)) for n in os.listdir(sdir)
                   if os.path.islink(os.path.join(sdir, n))):
            undo.discard(sdir)  # its last controller is gone
    _drop_dangling(root)


# directories of a PCI function that belong to the function, not to its driver
_KEPT = frozenset({"power", "msi_irqs", "link"})
_PCI_NAME = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


def is_pci_name(name: str) -> bool:
    return bool(_PCI_NAME.fullmatch(name))


def _list(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _drop_dangling(root: str) -> None:
    """class links, and the lower_/upper_/master/slaves/holders links of stacks, to devices
    that are gone."""
    for cls in ("class/net", "class/block", "class/graphics"):
        for name in _list(os.path.join(root, cls)):
            link = os.path.join(root, cls, name)
            if not os.path.exists(link):
                undo.discard(link)
    for kind, prefixes in (("net", ("lower_", "upper_", "master")),
                           ("block", ("slaves/", "holders/"))):
        for name in _list(os.path.join(root, "devices/virtual", kind)):
            top = os.path.join(root, "devices/virtual", kind, name)
            for prefix in prefixes:
                where = os.path.join(top, os.path.dirname(prefix))
                for entry in _list(where):
                    link = os.path.join(where, entry)
                    if entry.startswith(os.path.basename(prefix)) and os.path.islink(link) \
                            and not os.path.exists(link):
                        undo.discard(link)


MASTER_KINDS = frozenset({"bond", "bridge", "team", "openvswitch"})


def stack_net(root: str, name: str, kind: str, lowers: list[str]) -> None:
    """A bond, bridge, team, OVS, VLAN or macvlan device on top of interfaces."""
    top = os.path.join(root, "devices/virtual/net", name)
    undo.makedirs(top)
    _write(os.path.join(top, "operstate"), "up\n")
    if kind == "bridge":
        undo.makedirs(os.path.join(top, "bridge"))  # what tells a bridge apart in sysfs
    _link(top, os.path.join(root, "class/net", name))
    for lower in lowers:
        below = os.path.realpath(os.path.join(root, "class/net", lower))
        _link(below, os.path.join(top, f"lower_{lower}"))
        _link(top, os.path.join(below, f"upper_{name}"))
        if kind in MASTER_KINDS:
            _link(top, os.path.join(below, "master"))


def stack_block(root: str, name: str, dm_name: str, slaves: list[str], major: int = 254) -> None:
    """A device-mapper device (LVM, LUKS, multipath) built on block devices."""
    minor = len(_list(os.path.join(root, "devices/virtual/block")))
    top = os.path.join(root, "devices/virtual/block", name)
    _block(root, top, major, minor)
    undo.makedirs(os.path.join(top, "dm"))
    _write(os.path.join(top, "dm", "name"), dm_name + "\n")
    for lower in slaves:
        below = os.path.realpath(os.path.join(root, "class/block", lower))
        _link(below, os.path.join(top, "slaves", lower))
        _link(top, os.path.join(below, "holders", name))


def read_attr(root: str, address: PciAddress, name: str) -> str:
    return _read(os.path.join(device_dir(root, address), name)).strip()


def set_attr(root: str, address: PciAddress, name: str, text: str) -> None:
    """What the kernel would show on the next read of an attribute."""
    _write(os.path.join(device_dir(root, address), name), text + "\n")
