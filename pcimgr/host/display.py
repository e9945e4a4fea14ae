"""What a desktop host's display and memory look like to a hand-off: the device nodes a
function's drivers made (DRM, fbdev, ALSA, NVIDIA's), the virtual consoles and which
one is fbcon, the boot framebuffer (sysfb's platform device and its driver) and whether it
claims a function's BAR in /proc/iomem, a driver's module (loadable or built in, its
users), the hugepage pools and the CPUs online. Reads only, through the machine's sysfs and
system files."""

from __future__ import annotations

import re
from typing import NamedTuple

from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import Sysfs, device_path

# sysfb's platform devices (drivers/firmware/sysfb.c) and the drivers that take them
BOOT_FRAMEBUFFERS = ("simple-framebuffer", "efi-framebuffer", "vesa-framebuffer")
# what they call the memory they claim in /proc/iomem
BOOT_FB_CLAIMS = ("BOOTFB", "efifb", "vesafb", "simplefb", "simpledrm")
# a DRM driver on sysfb: unbinding it leaves sysfb's BOOTFB resource on the BAR
SYSFB_DRM = "simpledrm"
_SOUND = re.compile(r"(controlC|pcmC|hwC|midiC)\d+")
_NVIDIA = re.compile(r"nvidia(\d+|ctl|-modeset)")


class Vtcon(NamedTuple):
    name: str          # vtconN
    description: str   # "(M) frame buffer device", "(S) dummy device", "(S) VGA+"
    bound: bool

    @property
    def is_fbcon(self) -> bool:
        return "frame buffer" in self.description


class BootFramebuffer(NamedTuple):
    device: str        # efi-framebuffer.0 (bus/platform/devices)
    driver: str | None  # efifb, vesafb, simplefb, simpledrm


def nodes_of(machine: Machine, address: str) -> list[str]:
    """The /dev nodes of the function's drivers: DRM cards and render nodes, fbdev, ALSA
    (each card's controls and PCMs), and NVIDIA's (its nodes have no device in sysfs: all
    of them, with nvidiactl, when the function is on nvidia)."""
    sysfs = machine.sysfs
    nodes = [f"/dev/dri/{n}" for n in sysfs.list_dir(device_path(address, "drm"))
             if n.startswith(("card", "renderD"))]
    nodes += [f"/dev/{n}" for n in sysfs.list_dir(device_path(address, "graphics"))
              if n[2:].isdigit()]
    for card in sysfs.list_dir(device_path(address, "sound")):
        if card.startswith("card"):
            nodes += [f"/dev/snd/{n}" for n in sysfs.list_dir(device_path(address, "sound", card))
                      if _SOUND.fullmatch(n)]
    driver = sysfs.read_link(device_path(address, "driver"))
    if driver is not None and driver.rsplit("/", 1)[-1].startswith("nvidia"):
        nodes += [f"/dev/{n}" for n in machine.list_system_dir("dev") if _NVIDIA.fullmatch(n)]
    return nodes


def framebuffers_of(sysfs: Sysfs, address: str) -> list[str]:
    """fbN of the function (fbdev or a DRM driver's emulation)."""
    return [n for n in sysfs.list_dir(device_path(address, "graphics")) if n[2:].isdigit()]


def vtconsoles(sysfs: Sysfs) -> list[Vtcon]:
    found = []
    for name in sysfs.list_dir("class/vtconsole"):
        if re.fullmatch(r"vtcon\d+", name):
            found.append(Vtcon(name, sysfs.read_attr(f"class/vtconsole/{name}/name") or "",
                               sysfs.read_attr(f"class/vtconsole/{name}/bind") == "1"))
    return found


def boot_framebuffers(sysfs: Sysfs) -> list[BootFramebuffer]:
    found = []
    for name in sysfs.list_dir("bus/platform/devices"):
        if name.split(".", 1)[0] in BOOT_FRAMEBUFFERS:
            link = sysfs.read_link(f"bus/platform/devices/{name}/driver")
            found.append(BootFramebuffer(name, link.rsplit("/", 1)[-1] if link else None))
    return found


def iomem_claims(iomem: str, address: str) -> list[str]:
    """The boot framebuffer's claims (BOOTFB, efifb, ...) inside the function's BARs, as
    /proc/iomem nests them (two spaces a level)."""
    found: list[str] = []
    inside: int | None = None  # the indent of the function's BAR we are below
    for line in iomem.splitlines():
        _, sep, name = line.partition(" : ")
        if not sep:
            continue
        depth = len(line) - len(line.lstrip(" "))
        name = name.strip()
        if inside is not None and depth <= inside:
            inside = None
        if inside is None and name == address:
            inside = depth
        elif inside is not None and name in BOOT_FB_CLAIMS and name not in found:
            found.append(name)
    return found


class Module(NamedTuple):
    name: str
    builtin: bool
    users: int | None          # refcnt; None for a built-in one
    holders: tuple[str, ...]   # modules that depend on it


def module_of(sysfs: Sysfs, driver: str) -> Module | None:
    """The module a PCI driver comes from; None when sysfs does not say."""
    link = sysfs.read_link(f"bus/pci/drivers/{driver}/module")
    if link is None:
        return None
    name = link.rsplit("/", 1)[-1]
    if not sysfs.exists(f"module/{name}/initstate"):
        return Module(name, True, None, ())
    refcnt = sysfs.read_attr(f"module/{name}/refcnt")
    return Module(name, False, int(refcnt) if refcnt and refcnt.isdigit() else None,
                  tuple(sysfs.list_dir(f"module/{name}/holders")))


class Pool(NamedTuple):
    size_kb: int
    total: int
    free: int


def hugepage_pool(sysfs: Sysfs, size_kb: int) -> Pool | None:
    """None when the kernel offers no pages of that size."""
    base = f"kernel/mm/hugepages/hugepages-{size_kb}kB"
    total, free = sysfs.read_attr(f"{base}/nr_hugepages"), sysfs.read_attr(f"{base}/free_hugepages")
    if total is None or not total.isdigit() or free is None or not free.isdigit():
        return None
    return Pool(size_kb, int(total), int(free))


def hugepage_sizes(sysfs: Sysfs) -> list[int]:
    return sorted(int(m[1]) for n in sysfs.list_dir("kernel/mm/hugepages")
                  if (m := re.fullmatch(r"hugepages-(\d+)kB", n)))


def mem_available_kb(machine: Machine) -> int | None:
    data = machine.read_system_file("proc/meminfo")
    m = re.search(rb"^MemAvailable:\s+(\d+) kB", data or b"", re.M)
    return int(m[1]) if m else None


def cpus_online(sysfs: Sysfs) -> str | None:
    return sysfs.read_attr("devices/system/cpu/online")


def boot_id(machine: Machine) -> str:
    """This boot's identity: a hand-off recorded in another boot holds nothing now."""
    data = machine.read_system_file("proc/sys/kernel/random/boot_id") or b""
    text = data.decode("ascii", "replace").strip()
    return text if re.fullmatch(r"[0-9a-f-]{36}", text) else ""
