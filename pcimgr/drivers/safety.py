"""Why a function must not leave its host driver: the refusals of every change command.

What the host uses each function for comes from one survey (hostuse.py); this
module adds the rules that are about the function itself: the chipset, the boot
display, and a PF whose VFs would vanish with its driver.
"""

from __future__ import annotations

from typing import NamedTuple

from pcimgr.core.model import Host, PciDevice
from pcimgr.core.readiness import ready
from pcimgr.host.sysfs import Sysfs, device_path
from pcimgr.host.usage import Survey

# Functions a running host needs whatever the user asks (class >> 8).
CHIPSET = {0x0600: "host bridge", 0x0601: "ISA/LPC bridge", 0x0C05: "SMBus controller"}


class Concern(NamedTuple):  # not a dataclass: cheaper at start (host/usage.py's Use)
    address: str
    reason: str
    forceable: bool = True


def chipset(device: PciDevice) -> str | None:
    return CHIPSET.get(device.class_code >> 8)


def concerns(sysfs: Sysfs, host: Host, targets: list[PciDevice], survey: Survey) -> list[Concern]:
    """Everything that speaks against taking these functions from the host.

    A PF's VFs go with its driver, so what the host does with them counts for the PF.
    """
    found: list[Concern] = []
    for d in targets:
        a = str(d.address)
        part = chipset(d)
        if part:
            found.append(Concern(a, f"it is the chipset's {part}, which the host needs",
                                 forceable=False))
        found += [Concern(a, str(use)) for use in survey.of(d.address)]
        if d.sriov is not None:
            for vf in d.sriov.vfs:
                found += [Concern(a, f"its VF {vf}: {use}") for use in survey.of(vf)]
            held = [str(vf.address) for vf in (host.get(v) for v in d.sriov.vfs)
                    if vf is not None and ready(vf)]
            if held:
                found.append(Concern(a, f"its VFs {', '.join(held)} are on vfio-pci, and "
                                        "unbinding the PF driver destroys them"))
        if boot_display(sysfs, d):
            found.append(Concern(a, "it is the boot display"))
    return found


def boot_display(sysfs: Sysfs, device: PciDevice) -> bool:
    # only display controllers have boot_vga: no read for the thousands of others
    return device.base_class == 0x03 and \
        sysfs.read_attr(device_path(device.address, "boot_vga")) == "1"


# what a tree whose host facts are unknown says of every function: never "nothing"
UNKNOWN_USE = "host use unknown"


def host_use(sysfs: Sysfs, device: PciDevice, survey: Survey, long: bool = False) -> list[str]:
    """What `list` and `show` say the host uses a function for: short forms for JSON
    `host_use` and the table, whole sentences with their chain for `show`."""
    uses = [str(use) if long else use.short for use in survey.of(device.address)]
    if not survey.known:
        uses.append(UNKNOWN_USE)
    part = chipset(device)
    if part:
        uses.insert(0, f"chipset {part}")
    if boot_display(sysfs, device):
        uses.append("boot display")
    return uses
