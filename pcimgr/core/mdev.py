"""Mediated devices: a parent, the types it offers, the mdevs made of them, the definitions
kept in mdevctl's format, and the libvirt element a guest takes one by. Pure data; no I/O.

The kernel's shapes (Documentation/driver-api/vfio-mediated-device.rst, seen on Linux 6.1 in
the lab): a parent is an entry of /sys/class/mdev_bus (a PCI function's address, or a
virtual device's name such as `mtty`); each type is a directory of its
`mdev_supported_types` (`mtty-2`, `i915-GVTg_V5_4`, `nvidia-222`) with `name`,
`device_api`, `available_instances` and, where the parent gives one, `description`; an mdev
is a directory named by its UUID below the parent, listed in /sys/bus/mdev/devices.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from pcimgr.core.errors import BadInput

if TYPE_CHECKING:  # ElementTree only where XML is made: the journal's check imports this
    import xml.etree.ElementTree as ET

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# what a parent's or type's directory may be called: one path component of the kernel's
# names (dev_name(), "<driver>-<type>"), nothing a shell or a path could read otherwise
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}")
_ATTR = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# device_api -> libvirt's <hostdev type='mdev' model=...> (formatdomain: "Mediated devices")
MODELS = {"vfio-pci": "vfio-pci", "vfio-ccw": "vfio-ccw", "vfio-ap": "vfio-ap"}
STARTS = ("auto", "manual")


def parse_uuid(text: str) -> str:
    """An mdev's UUID as the kernel names its directory: lower case, hyphenated."""
    value = text.strip().lower()
    if not _UUID.fullmatch(value):
        raise BadInput(f"{text!r} is not an mdev UUID (8-4-4-4-12 hexadecimal digits, as "
                       "`uuidgen` prints one); `pcimgr mdev list` shows the mdevs")
    return value


def is_uuid(text: str) -> bool:
    return bool(_UUID.fullmatch(text.strip().lower()))


def check_name(text: str, what: str) -> str:
    """A parent's or a type's name as given by a user or read from a file."""
    if not _NAME.fullmatch(text):
        raise BadInput(f"{text!r} is not a valid {what} name; `pcimgr mdev types` shows the "
                       f"parents and their types")
    return text


def check_attr(name: str, value: str) -> tuple[str, str]:
    """One of an mdev's attributes as mdevctl keeps them: a file of the mdev's directory and
    the line written to it."""
    if not _ATTR.fullmatch(name) or name in ("remove", "uevent", "mdev_type", "driver"):
        raise BadInput(f"{name!r} is not an mdev attribute pcimgr can set (a file of the "
                       "mdev's directory such as assign_adapter); give --attr NAME=VALUE")
    if "\n" in value.rstrip("\n") or "\0" in value or len(value) > 4000:
        raise BadInput(f"the value of mdev attribute {name} must be one line")
    return name, value


# NamedTuples, not frozen dataclasses: the same immutable values, several times cheaper to
# define at start (every mdev read command imports this module)
class MdevType(NamedTuple):
    id: str                    # the directory: mtty-2
    name: str | None           # its `name`: "Dual port serial"
    description: str | None
    device_api: str | None     # vfio-pci, vfio-ccw, vfio-ap
    available: int | None      # available_instances, as the parent counts them now
    devices: tuple[str, ...]   # UUIDs of its live mdevs

    @property
    def model(self) -> str | None:
        return MODELS.get(self.device_api or "")


class MdevParent(NamedTuple):
    name: str                  # its entry in class/mdev_bus
    pci: str | None            # the PCI function's address, when the parent is one
    driver: str | None
    types: tuple[MdevType, ...]

    def type(self, type_id: str) -> MdevType | None:
        return next((t for t in self.types if t.id == type_id), None)


class Mdev(NamedTuple):
    uuid: str
    parent: str
    type_id: str | None
    driver: str | None
    iommu_group: int | None


class Definition(NamedTuple):
    """One file of /etc/mdevctl.d/PARENT/UUID, as mdevctl reads and writes it."""

    uuid: str
    parent: str
    type_id: str
    start: str                            # auto: started when the parent appears
    attrs: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, object]:
        # mdevctl's order and shape: attrs a list of one-key objects, order kept
        return {"mdev_type": self.type_id, "start": self.start,
                "attrs": [{k: v} for k, v in self.attrs]}


def definition_from_json(uuid: str, parent: str, data: object) -> Definition:
    """A definition file's content, checked as mdevctl checks it (and stricter where a name
    reaches a path or a write); BadInput naming what is wrong."""
    if not isinstance(data, dict):
        raise BadInput("it is not a JSON object")
    type_id, start, attrs = data.get("mdev_type"), data.get("start"), data.get("attrs", [])
    if not isinstance(type_id, str):
        raise BadInput("it has no mdev_type")
    if start not in STARTS:
        raise BadInput(f"its start is {start!r}, not auto or manual")
    if attrs is None:
        attrs = []
    if not isinstance(attrs, list):
        raise BadInput("its attrs is not a list")
    pairs = []
    for item in attrs:
        if not (isinstance(item, dict) and len(item) == 1):
            raise BadInput("an attribute is not a one-key object")
        ((k, v),) = item.items()
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise BadInput(f"attribute {k!r} has no string value")
        pairs.append(check_attr(str(k), str(v)))
    return Definition(parse_uuid(uuid), check_name(parent, "parent"),
                      check_name(type_id, "mdev type"), start, tuple(pairs))


def hostdev(uuid: str, model: str) -> ET.Element:
    """<hostdev mode='subsystem' type='mdev' model=...><source><address uuid=.../></source>."""
    import xml.etree.ElementTree as ET
    element = ET.Element("hostdev", {"mode": "subsystem", "type": "mdev", "model": model})
    ET.SubElement(ET.SubElement(element, "source"), "address", {"uuid": uuid})
    return element


def _elements(domain_xml: str) -> list[tuple[str, ET.Element]]:
    import xml.etree.ElementTree as ET
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return []
    found = []
    for dev in root.iterfind("./devices/hostdev[@type='mdev']"):
        address = dev.find("./source/address")
        uuid = address.get("uuid") if address is not None else None
        if uuid and is_uuid(uuid):
            found.append((uuid.lower(), dev))
    return found


def mdevs_in(domain_xml: str) -> list[str]:
    """The UUIDs of the mdevs a domain's XML names."""
    return [uuid for uuid, _ in _elements(domain_xml)]


def holders_of(domains: list[tuple[str, str | None, str | None]]) -> dict[str, list[str]]:
    """mdev UUID -> the domains naming it, from (name, live XML, persistent XML) of each."""
    found: dict[str, list[str]] = {}
    for name, live, config in domains:
        for uuid in sorted(set(mdevs_in(live or "")) | set(mdevs_in(config or ""))):
            found.setdefault(uuid, []).append(name)
    return found


def element_of(domain_xml: str | None, uuid: str) -> ET.Element | None:
    """The <hostdev type='mdev'> of that mdev in a domain's XML, as libvirt gave it."""
    return next((e for u, e in _elements(domain_xml or "") if u == uuid), None)


# -- NVIDIA's vendor vGPU interface on SR-IOV VFs (vGPU 17+, Linux >= 6.8) -------------
# Each VF of a GPU on `nvidia` has nvidia/creatable_vgpu_types ("ID : name" lines, what
# the VF can take now: its siblings' types shrink it) and nvidia/current_vgpu_type (the
# ID it has, 0 for none; written to set or clear). The VF stays on nvidia, which
# registers it with VFIO; a guest gets it as a plain PCI hostdev, managed='no'.

_VGPU_LINE = re.compile(r"\s*([0-9]+)\s*:\s*(\S.*?)\s*")


class VgpuType(NamedTuple):
    id: int
    name: str


class VendorVgpu(NamedTuple):
    vf: str                         # the VF's address
    current: int                    # 0: none
    creatable: tuple[VgpuType, ...]


def parse_creatable(text: str) -> tuple[VgpuType, ...]:
    """creatable_vgpu_types as the driver prints it; a header or any other line is skipped
    (an ID is a number, a name printable text, or the line is not one)."""
    found = []
    for line in text.splitlines():
        m = _VGPU_LINE.fullmatch(line)
        if m and m[2].isprintable() and int(m[1]) > 0:
            found.append(VgpuType(int(m[1]), m[2][:128]))
    return tuple(found)


def find_vgpu_type(types: tuple[VgpuType, ...], wanted: str) -> VgpuType | None:
    """A type by its ID ("1046") or its name ("NVIDIA L4-2Q", or "L4-2Q")."""
    for t in types:
        if wanted == str(t.id) or wanted == t.name or wanted == t.name.split(" ", 1)[-1]:
            return t
    return None
