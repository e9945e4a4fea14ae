"""A simulated host's boot files: /proc/cpuinfo, the bootloader's configuration and the
initramfs generator's, as a fresh install of that distribution has them, and stand-ins
for their programs (update-grub, update-initramfs, ...), which pcimgr finds but never
runs on a simulated host (SimulatedMachine.run_program records them).

The kernel command line in the configuration is the one the host declares it was booted
with (HostFacts.cmdline), so a host built without the IOMMU has no intel_iommu=on there.
"""

from __future__ import annotations

import os
from typing import Any

STAND_IN = ("#!/bin/sh\n# a simulated host's stand-in: pcimgr records what it would run "
            "(.pcimgr-ran)\nexit 0\n")

# Debian 12's /etc/default/grub, but the command line
DEBIAN_GRUB = """\
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="{cmdline}"
GRUB_CMDLINE_LINUX=""

# If your computer has multiple operating systems installed, then you
# probably want to run os-prober. However, if your computer is a host
# for guest OSes installed via LVM or raw disk devices, running
# os-prober can cause damage to those guest OSes as it mounts
# filesystems to look for things.
#GRUB_DISABLE_OS_PROBER=false

# Uncomment to enable BadRAM filtering, modify to suit your needs
# This works with Linux (no patch required) and with any kernel that obtains
# the memory map information from GRUB (GNU Mach, kernel of FreeBSD ...)
#GRUB_BADRAM="0x01234567,0xfefefefe,0x89abcdef,0xefefefef"

# Uncomment to disable graphical terminal
#GRUB_TERMINAL=console
"""

# Fedora's: grubby keeps GRUB_CMDLINE_LINUX and the BLS entries in step
FEDORA_GRUB = """\
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR="$(sed 's, release .*$,,g' /etc/system-release)"
GRUB_DEFAULT=saved
GRUB_DISABLE_SUBMENU=true
GRUB_TERMINAL_OUTPUT="console"
GRUB_CMDLINE_LINUX="{cmdline}"
GRUB_DISABLE_RECOVERY="true"
GRUB_ENABLE_BLSCFG=true
"""

DEBIAN_INITRAMFS_MODULES = """\
# List of modules that you want to include in your initramfs.
# They will be loaded at boot time in the order below.
#
# Syntax:  module_name [args ...]
#
# You must run update-initramfs(8) to effect this change.
#
# Examples:
#
# raid1
# sd_mod
"""


def write(root: str, facts: dict[str, Any]) -> None:
    words = facts["cmdline"].split()
    release = next((w.split("vmlinuz-", 1)[1] for w in words
                    if w.startswith("BOOT_IMAGE=") and "vmlinuz-" in w), "6.1.0-26-amd64")
    # what a bootloader's configuration adds itself (the image, the root) is not in it
    options = " ".join(w for w in words if not w.startswith(("BOOT_IMAGE=", "root="))
                       and w not in ("ro", "rw"))
    root_words = " ".join(w for w in words if w.startswith("root=") or w in ("ro", "rw"))
    cpu = "".join(f"processor\t: {n}\nvendor_id\t: {facts['cpu_vendor']}\n"
                  f"model name\t: simulated\n\n" for n in range(2))
    files: dict[str, str] = {"proc/cpuinfo": cpu, "proc/sys/kernel/osrelease": release + "\n"}
    if facts.get("modules_alias"):
        files[f"lib/modules/{release}/modules.alias"] = "".join(
            line + "\n" for line in facts["modules_alias"])
    programs: list[str] = []
    bootloader, initramfs = facts["bootloader"], facts["initramfs"]
    if bootloader == "grub":
        files["etc/default/grub"] = DEBIAN_GRUB.format(cmdline=options)
        programs += ["usr/sbin/update-grub", "usr/sbin/grub-mkconfig"]
    elif bootloader == "systemd-boot":
        files["etc/kernel/cmdline"] = f"{root_words} {options}".strip() + "\n"
        files["boot/efi/loader/loader.conf"] = "timeout 3\n"
        programs += ["usr/bin/kernel-install", "usr/bin/bootctl"]
    elif bootloader == "grubby":
        files["etc/default/grub"] = FEDORA_GRUB.format(cmdline=options)
        entry = f"boot/loader/entries/0123456789abcdef0123456789abcdef-{release}.conf"
        files[entry] = (f"title Fedora Linux ({release})\nversion {release}\n"
                        f"linux /vmlinuz-{release}\ninitrd /initramfs-{release}.img\n"
                        f"options {root_words} {options}\ngrub_users $grub_users\n"
                        "grub_arg --unrestricted\ngrub_class fedora\n")
        programs += ["usr/sbin/grubby", "usr/sbin/grub2-mkconfig"]
    if initramfs == "initramfs-tools":
        files["etc/initramfs-tools/modules"] = DEBIAN_INITRAMFS_MODULES
        os.makedirs(os.path.join(root, "etc/initramfs-tools/hooks"), exist_ok=True)
        programs += ["usr/sbin/update-initramfs", "usr/sbin/mkinitramfs"]
    elif initramfs == "dracut":
        os.makedirs(os.path.join(root, "usr/lib/dracut/modules.d"), exist_ok=True)
        programs += ["usr/bin/dracut"]
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    for rel in programs:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(STAND_IN)
        os.chmod(path, 0o755)
