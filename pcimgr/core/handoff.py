"""A hand-off profile: which functions go to a guest when libvirt starts it, and what the host
gives up for them (its display manager, console, framebuffer, hugepages, CPUs). Pure: the
profile's checks and JSON form, CPU lists, and the domain named by the XML libvirt gives its
hook on stdin."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from pcimgr.core.errors import BadInput

FORMAT = 1
DISPLAY_MANAGER = "display-manager.service"  # the alias every Debian display manager takes
# libvirt refuses "/" in a name; pcimgr keeps one file per guest, so a name is a file name
VM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
_UNIT = re.compile(r"[A-Za-z0-9:_.@-]{1,200}\.service")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# the sizes Linux offers on x86 (2 MiB, 1 GiB) and others' (64 KiB to 16 GiB)
SIZES = {"64K": 64, "2M": 2048, "32M": 32768, "512M": 524288, "1G": 1048576, "16G": 16777216}
MAX_CPUS = 8192


class Hugepages(NamedTuple):
    pages: int
    size_kb: int

    def __str__(self) -> str:
        return f"{self.pages} x {size_name(self.size_kb)}"


class Profile(NamedTuple):
    vm: str
    addresses: tuple[str, ...]      # the functions named (their group mates join with group)
    group: bool
    display_manager: str | None     # the unit stopped first, started again after; None: kept
    framebuffer: bool               # the consoles and boot framebuffer on them may be taken
    hugepages: Hugepages | None     # reserved for the guest while it runs
    isolate_cpus: str | None        # CPUs the host's slices leave to the guest ("2-7")
    driver: str | None              # the VFIO driver; None: the best the kernel offers
    unload_driver: bool             # `modprobe -r` the host driver once its functions left
    force: bool                     # the host may lose what it uses these functions for

    def describe(self) -> list[str]:
        lines = [f"functions: {', '.join(self.addresses)}" + (" and their IOMMU groups"
                                                             if self.group else "")]
        if self.display_manager:
            lines.append(f"stops {self.display_manager} while {self.vm} runs")
        if self.framebuffer:
            lines.append("takes the consoles and boot framebuffer on these functions")
        if self.hugepages:
            lines.append(f"reserves {self.hugepages} hugepages")
        if self.isolate_cpus:
            lines.append(f"keeps the host's slices off CPUs {self.isolate_cpus}")
        lines.append(f"VFIO driver: {self.driver or 'the best the kernel offers'}"
                     + ("; unloads the host driver" if self.unload_driver else ""))
        if self.force:
            lines.append("forced: the host may lose what it uses them for")
        return lines

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT, **self._asdict()}
        data["addresses"] = list(self.addresses)
        data["hugepages"] = self.hugepages._asdict() if self.hugepages else None
        return data


def check_vm(name: str) -> str:
    if not VM_NAME.fullmatch(name):
        raise BadInput(f"not a guest name pcimgr keeps a profile for: {name!r}; use letters, "
                       "digits and . _ + - (at most 64, not starting with . or -)")
    return name


def check_unit(unit: str) -> str:
    if not _UNIT.fullmatch(unit):
        raise BadInput(f"not a service unit: {unit!r}; name one such as gdm.service or "
                       f"{DISPLAY_MANAGER}")
    return unit


def size_name(kb: int) -> str:
    return next((name for name, v in SIZES.items() if v == kb), f"{kb}K")


def parse_hugepages(text: str) -> Hugepages:
    """N or N,SIZE (SIZE 2M, 1G, ...; default 2M)."""
    count, _, size = text.partition(",")
    if not (count.isascii() and count.isdigit()) or not 0 < int(count) <= 1 << 24:
        raise BadInput(f"--hugepages {text!r}: give a count (and a size), such as 2048 or 8,1G")
    size = size.strip().upper() or "2M"
    if size not in SIZES:
        raise BadInput(f"--hugepages {text!r}: unknown page size {size!r}; use one of "
                       + ", ".join(SIZES))
    return Hugepages(int(count), SIZES[size])


def parse_cpus(text: str) -> frozenset[int]:
    """The kernel's CPU list syntax ("0-3,8,10-11"), as in /sys/devices/system/cpu/online."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        first, dash, last = part.partition("-")
        if not (first.isascii() and first.isdigit()) or (
                dash and not (last.isascii() and last.isdigit())):
            raise BadInput(f"not a CPU list: {text!r}; write it as the kernel does, such as "
                           "2-5,8")
        lo, hi = int(first), int(last or first)
        if lo > hi or hi >= MAX_CPUS:
            raise BadInput(f"not a CPU list: {text!r} ({part} is no range of CPUs)")
        cpus.update(range(lo, hi + 1))
    return frozenset(cpus)


def format_cpus(cpus: frozenset[int] | set[int]) -> str:
    """The shortest CPU list ("0-1,6")."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


MAX_XML = 4 << 20  # libvirt's own limit on domain XML is far below


def domain_of(xml: str) -> tuple[str, str | None]:
    """(name, uuid) of the domain XML libvirt hands a hook on stdin; BadInput when it names
    none. Entities are refused: this is libvirt's own output, which has none."""
    import xml.etree.ElementTree as ET  # noqa: PLC0415 - only the hook reads XML
    if len(xml) > MAX_XML or "<!ENTITY" in xml:
        raise BadInput("the domain XML on stdin is not libvirt's (too large, or it declares "
                       "entities)")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise BadInput(f"the domain XML on stdin does not parse ({e})") from None
    name = root.findtext("name")
    uuid = root.findtext("uuid")
    if root.tag != "domain" or not name:
        raise BadInput("stdin holds no <domain> with a <name>")
    uuid = uuid.strip().lower() if uuid else None
    return name.strip(), uuid if uuid and _UUID.fullmatch(uuid) else None
