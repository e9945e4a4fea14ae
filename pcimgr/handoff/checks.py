"""`pcimgr doctor`'s hand-off checks: is the hook installed where libvirt runs it, and can
the host's boot GPU be taken (the firmware framebuffer on its BAR). doctor --fix offers the
kernel parameter a sysfb framebuffer needs, as it does the IOMMU's."""

from __future__ import annotations

import re

from pcimgr.advice.doctor import NA, PASS, WARN, Check
from pcimgr.core.handoff import Profile
from pcimgr.handoff import hookfile, planner, profiles
from pcimgr.host import display
from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import device_path

SYSFB_WORD = "initcall_blacklist=sysfb_init"
# any of these keeps sysfb from registering its framebuffer (drivers/firmware/sysfb.c)
SYSFB_OFF = (SYSFB_WORD, "video=simplefb:off")
DPKG_STATUS = "var/lib/dpkg/status"


def run(machine: Machine, config: str) -> list[Check]:
    named = profiles.load_all(config)
    found = [c for c in (_hook(machine, bool(named)), _boot_framebuffer(machine, named))
             if c is not None]
    return found


def _hook(machine: Machine, profiles_defined: bool) -> Check | None:
    content = machine.read_system_file(hookfile.REL)
    if content is None:
        if not profiles_defined:
            return None
        return Check("handoff-hook", WARN, f"hand-off profiles are defined, but /{hookfile.REL} "
                     "is missing: libvirt starts those guests without them",
                     "`pcimgr hook install`, then restart libvirtd")
    if not hookfile.is_ours(content):
        return Check("handoff-hook", WARN, f"/{hookfile.REL} is not pcimgr's hook",
                     "move it aside and run `pcimgr hook install`")
    version = libvirt_version(machine)
    if version is None:
        detail = "libvirt's version unknown (no dpkg record of libvirt-daemon)"
    elif version < hookfile.FIRST_LIBVIRT:
        return Check("handoff-hook", WARN, f"libvirt {'.'.join(map(str, version))} runs only "
                     "/etc/libvirt/hooks/qemu, not qemu.d/ (6.5.0 and later do)",
                     "upgrade libvirt (Debian 11 and later have 6.9 or newer)")
    else:
        detail = f"libvirt {'.'.join(map(str, version))} runs qemu.d/"
    if not _executable(machine):
        return Check("handoff-hook", WARN, f"/{hookfile.REL} is not executable: libvirt skips it",
                     "`pcimgr hook install` again")
    return Check("handoff-hook", PASS, f"/{hookfile.REL} installed; {detail}")


def _executable(machine: Machine) -> bool:
    import os
    import stat

    from pcimgr.host import sysfiles
    try:
        mode = os.stat(sysfiles.path(machine.system_root, hookfile.REL)).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IXUSR)


def libvirt_version(machine: Machine) -> tuple[int, ...] | None:
    """The installed libvirt-daemon's version from dpkg's status file (no call to libvirt,
    no program run)."""
    data = (machine.read_system_file(DPKG_STATUS) or b"").decode("utf-8", "replace")
    for entry in data.split("\n\n"):
        if re.search(r"^Package: libvirt-daemon$", entry, re.M) and \
                "Status: install ok installed" in entry:
            m = re.search(r"^Version: (?:\d+:)?(\S+)", entry, re.M)
            return hookfile.libvirt_version(m[1]) if m else None
    return None


def boot_gpus(machine: Machine) -> list[str]:
    return [a for a in machine.sysfs.list_dir("bus/pci/devices")
            if machine.sysfs.read_attr(device_path(a, "boot_vga")) == "1"]


def sysfb_holds(machine: Machine, address: str) -> list[str]:
    """sysfb's claims on the function's BAR while simpledrm drives its framebuffer."""
    iomem = (machine.read_system_file("proc/iomem") or b"").decode("ascii", "replace")
    claims = display.iomem_claims(iomem, address)
    drm = [b for b in display.boot_framebuffers(machine.sysfs) if b.driver == display.SYSFB_DRM]
    return claims if claims and drm else []


def sysfb_off(machine: Machine) -> bool:
    words = machine.kernel_cmdline().split()
    return any(w in words for w in SYSFB_OFF)


def _boot_framebuffer(machine: Machine, named: list[Profile]) -> Check | None:
    gpus = boot_gpus(machine)
    if not gpus:
        return None
    gpu = gpus[0]
    taken = any(gpu in p.addresses or (p.group and gpu in planner.scope(machine, p))
                for p in named)
    held = sysfb_holds(machine, gpu)
    if held:
        detail = (f"simpledrm drives the firmware framebuffer on the boot GPU {gpu} "
                  f"({', '.join(held)} in /proc/iomem): it stays on the BAR after an unbind")
        if taken:
            return Check("boot-framebuffer", WARN, detail + "; its hand-off is refused",
                         f"`pcimgr doctor --fix` adds {SYSFB_WORD} to the kernel command line")
        return Check("boot-framebuffer", NA, detail + "; no hand-off takes it",
                     f"before a hand-off of it: {SYSFB_WORD} (`pcimgr doctor --fix` adds it "
                     "then)")
    firmware = [b for b in display.boot_framebuffers(machine.sysfs) if b.driver]
    if firmware:
        return Check("boot-framebuffer", PASS, f"the boot GPU {gpu}'s firmware framebuffer is "
                     f"on {', '.join(f'{b.driver} ({b.device})' for b in firmware)}, which a "
                     "hand-off with --framebuffer unbinds")
    return Check("boot-framebuffer", PASS, f"no firmware framebuffer sits on the boot GPU {gpu}")


def kernel_words(machine: Machine, config: str) -> list[str]:
    """What doctor --fix adds for the hand-offs: the sysfb switch, when a profile takes a
    boot GPU that simpledrm's firmware framebuffer holds."""
    if sysfb_off(machine):
        return []
    named = profiles.load_all(config)
    for gpu in boot_gpus(machine):
        if sysfb_holds(machine, gpu) and any(
                gpu in p.addresses or (p.group and gpu in planner.scope(machine, p))
                for p in named):
            return [SYSFB_WORD]
    return []
