"""Defined state: what the administrator wants each function to be, kept across reboots.

One readable JSON file per function in CONFIG_DIR/devices/<address>.json
(default /etc/pcimgr), written atomically, with what identifies the hardware
(address, vendor:device, subsystem ids, IOMMU group) next to the intent (a
driver; or a VF count, the VFs' driver and per-VF MAC/VLAN/trust settings).

For udev, each definition also has CONFIG_DIR/udev/<address>_<VENDOR>:<DEVICE>.env
(KEY=value lines): the rules (udev_files.py) look it up by the kernel name and the
uevent's PCI_ID, so a different card in the same slot matches no file.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, Damaged, NotFound
from pcimgr.core.model import Host, PciDevice
from pcimgr.plans import filechange, statefile

FORMAT = 1


@dataclass(frozen=True)
class Definition:
    address: str
    vendor_id: str
    device_id: str
    subsystem_vendor_id: str | None
    subsystem_device_id: str | None
    iommu_group: int | None             # for people: numbers change (lowest free id)
    driver: str | None = None           # bind this driver
    vfs: int | None = None              # a PF: this many VFs
    vf_driver: str | None = None        # ... on vfio-pci, or "host"
    vf: dict[str, dict[str, Any]] = field(default_factory=dict)  # index -> VF settings
    # the group by what identifies it: its members when defined (None: defined by a
    # pcimgr that did not record them)
    group_members: tuple[str, ...] | None = None
    owner: str | None = None            # USER[:GROUP] of its VFIO nodes (drivers/owner.py)

    @property
    def ids(self) -> str:
        return f"{self.vendor_id}:{self.device_id}"

    def describe(self) -> str:
        parts = []
        if self.driver:
            parts.append(f"driver {self.driver}")
        if self.vfs is not None:
            parts.append(f"{self.vfs} VF(s) on {self.vf_driver}")
        for index, settings in sorted(self.vf.items(), key=lambda kv: int(kv[0])):
            parts.append(f"VF {index}: "
                         + ", ".join(f"{k} {_word(v)}" for k, v in settings.items()))
        return "; ".join(parts) or "nothing"


def _word(value: Any) -> str:
    """trust and spoofchk as define takes them (on/off), not as Python prints them."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def identify(host: Host, device: PciDevice, **intent: Any) -> Definition:
    return Definition(str(device.address), device.vendor_id, device.device_id,
                      device.subsystem_vendor_id, device.subsystem_device_id,
                      device.iommu_group, group_members=group_members(host, device),
                      **intent)


def group_members(host: Host, device: PciDevice) -> tuple[str, ...] | None:
    """The addresses in DEVICE's IOMMU group, sorted; None without a group. The kernel
    hands out group numbers lowest-free-first (the lab: an igb VF recreated while another
    VFIO device existed came back in group 10, not 9), so a group is known by these. VFs
    other than DEVICE are left out: they come and go with their PF's VF count."""
    group = host.groups.get(device.iommu_group) if device.iommu_group is not None else None
    if group is None:
        return None
    return tuple(sorted({str(device.address)} | {str(m.address) for m in group.members
                                                 if m.physfn is None}))


def path(cfg: str, address: str) -> str:
    return os.path.join(cfg, "devices", f"{address}.json")


def load(cfg: str, address: str,
         view: dict[str, str | None] | None = None) -> Definition | None:
    """The definition, None if there is none; Damaged (naming the file and the fix) if its
    file is malformed. As it was before a change a kill cut short (plans/filechange.py)."""
    def shape(data: Any) -> Definition:
        d = _from_json(data)
        if d.address != address:
            raise ValueError(f"it defines {d.address}, not the function its name says")
        return d
    return filechange.load(cfg, path(cfg, address), shape, fix(address), view)


def fix(address: str) -> str:
    try:
        named = str(PciAddress.parse(address)) == address
    except BadInput:
        named = False
    if not named:
        return "its name is no PCI address: move it out of the devices directory"
    return (f"correct it, or remove it with `pcimgr undefine {address}` and define the "
            "function again")


def load_all(cfg: str) -> tuple[list[Definition], list[Damaged]]:
    """Every definition that reads, and the problem of each one that does not."""
    found, damaged = [], []
    view = filechange.as_before(cfg)
    for name in filechange.names(cfg, "devices", view):
        if not name.endswith(".json"):
            continue
        try:
            d = load(cfg, name[:-5], view)
        except Damaged as e:
            damaged.append(e)
            continue
        if d is not None:
            found.append(d)
    return found, damaged


def raise_damaged(damaged: list[Damaged]) -> None:
    """Exit 11 once the readable definitions were dealt with: each damaged one was named."""
    if damaged:
        raise Damaged(f"{len(damaged)} definition file(s) damaged and skipped (named above); "
                      "correct them or remove them with `pcimgr undefine ADDR`")


def save(cfg: str, definition: Definition) -> None:
    """The definition file and its udev env file, as one change."""
    save_all(cfg, [definition])


def save_all(cfg: str, found: list[Definition], also: filechange.Changes | None = None) -> None:
    """Several definitions (define --group: a group is defined whole or not at all), and
    ALSO (a pool's record), as one change: a failure at any file, or a kill, puts back
    every file already written."""
    changes = list(also or [])
    for d in found:
        changes += _files(cfg, d)
    _change(cfg, ", ".join(d.address for d in found), changes)


def _files(cfg: str, definition: Definition) -> list[tuple[str, str | None]]:
    env = []
    if definition.driver:
        env.append(f"PCIMGR_DRIVER={definition.driver}")
    if definition.vfs is not None:
        env.append(f"PCIMGR_VFS={definition.vfs}")
    json_text = statefile.dumps({"format": FORMAT} | asdict(definition))
    env_path = os.path.join(cfg, "udev", env_name(definition))
    stale = [p for p in _env_files(cfg, definition.address) if p != env_path]
    return [(env_path, "\n".join(env)), (path(cfg, definition.address), json_text),
            *((p, None) for p in stale)]


def remove(cfg: str, address: str, also: filechange.Changes | None = None) -> None:
    """The definition and its udev env files, and ALSO, as one change (env files first:
    udev stops acting on the function before status stops showing it)."""
    remove_all(cfg, [address], also)


def remove_all(cfg: str, addresses: list[str], also: filechange.Changes | None = None) -> None:
    """Several definitions (a group's) as one change."""
    _change(cfg, ", ".join(addresses),
            [*((p, None) for a in addresses for p in _env_files(cfg, a)),
             *((path(cfg, a), None) for a in addresses), *(also or [])])


def group_mates(definitions: list[Definition], d: Definition) -> list[Definition]:
    """The other definitions of D's IOMMU group onto a VFIO driver: applied with D, whole or
    not at all (planner._drop_partial_groups), so undone with it too."""
    from pcimgr.core.readiness import vfio_name
    if not vfio_name(d.driver):
        return []
    return [m for m in definitions if m.address != d.address and vfio_name(m.driver)
            and same_group(d, m)]


def _change(cfg: str, addresses: str, changes: filechange.Changes) -> None:
    filechange.change(cfg, f"the definition of {addresses}", changes)


def env_name(definition: Definition) -> str:
    """As the rules build it: %k and the uevent's PCI_ID (upper-case hex)."""
    return f"{definition.address}_{definition.vendor_id.upper()}:{definition.device_id.upper()}.env"


def _env_files(cfg: str, address: str) -> list[str]:
    return [os.path.join(cfg, "udev", name) for name in statefile.names(cfg, "udev")
            if name.startswith(f"{address}_")]


_ID = re.compile(r"[0-9a-f]{4}")
_OWNER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?")
# vgpu_type: a VF's vGPU type on NVIDIA's vendor interface (mdev/vgpu.py), vgpu_name its
# name when defined (sysfs lists a type's name only while a VF can still take it)
_SETTINGS = {"mac": str, "vlan": int, "qos": int, "trust": bool, "spoofchk": bool,
             "vgpu_type": int, "vgpu_name": str}


def _from_json(data: Any) -> Definition:
    """A definition file's content, checked field by field (status and apply act on it)."""
    statefile.obj(data, format=int, address=str, vendor_id=str, device_id=str,
                  subsystem_vendor_id=(str, type(None)), subsystem_device_id=(str, type(None)),
                  iommu_group=(int, type(None)))
    if data["format"] != FORMAT:
        raise ValueError(f"format {data['format']} (this pcimgr reads format {FORMAT})")
    try:
        PciAddress.parse(data["address"])
    except BadInput:
        raise ValueError(f"'address' is {data['address']!r}, not a PCI address") from None
    for key in ("vendor_id", "device_id"):
        if not _ID.fullmatch(data[key]):
            raise ValueError(f"{key!r} is {data[key]!r}, not 4 hex digits")
    fields = {k: v for k, v in data.items() if k in Definition.__dataclass_fields__}
    if not isinstance(fields.get("owner"), (str, type(None))) or (
            fields.get("owner") is not None and not _OWNER.fullmatch(fields["owner"])):
        raise ValueError("'owner' is not USER or USER:GROUP")
    members = fields.get("group_members")
    if members is not None:
        if not (isinstance(members, list) and members and len(members) <= 256
                and all(isinstance(m, str) and _is_address(m) for m in members)):
            raise ValueError("'group_members' is not a list of PCI addresses")
        fields["group_members"] = tuple(sorted(members))
    statefile.obj({"driver": None, "vfs": None, "vf_driver": None, "vf": {}} | fields,
                  driver=(str, type(None)), vfs=(int, type(None)),
                  vf_driver=(str, type(None)), vf=dict)
    d = Definition(**fields)
    if (d.driver is None) == (d.vfs is None):
        raise ValueError("it needs either 'driver' or 'vfs'")
    if d.vfs is not None and (d.vfs < 1 or d.vf_driver not in ("vfio-pci", "host")):
        raise ValueError("'vfs' must be at least 1 with 'vf_driver' vfio-pci or host")
    for index, settings in d.vf.items():
        if not (index.isascii() and index.isdigit()) or d.vfs is None or int(index) >= d.vfs:
            raise ValueError(f"VF index {index!r} is not one of the defined VFs")
        statefile.obj(settings)
        for key, value in settings.items():
            if key not in _SETTINGS:
                raise ValueError(f"VF {index} has an unknown setting {key!r}")
            statefile.obj({key: value}, **{key: _SETTINGS[key]})
        if settings.get("vgpu_type", 1) < 1:
            raise ValueError(f"VF {index} has vgpu_type {settings['vgpu_type']}, not an ID")
        name = settings.get("vgpu_name", "")
        if len(name) > 128 or not name.isprintable() or ("vgpu_name" in settings
                                                          and "vgpu_type" not in settings):
            raise ValueError(f"VF {index} has a vgpu_name that is not a type's name")
    return d


def select(definitions: list[Definition], address: PciAddress | None) -> list[Definition]:
    """One function's definition (what udev applies when it appears) with those of its IOMMU
    group: the group is applied whole or not at all. Here, not in the planner: `apply
    --device` checks it before it waits, without importing the plans."""
    if address is None:
        return definitions
    chosen = [d for d in definitions if d.address == str(address)]
    if not chosen:
        raise NotFound(f"{address} has no definition; `pcimgr status` lists the definitions")
    return chosen + [d for d in definitions if d.address != str(address)
                     and same_group(chosen[0], d)]


def same_group(a: Definition, b: Definition) -> bool:
    """By members where both recorded them; by number only for definitions without."""
    if a.group_members is not None and b.group_members is not None:
        return b.address in a.group_members
    return a.iommu_group is not None and a.iommu_group == b.iommu_group


def _is_address(text: str) -> bool:
    try:
        return str(PciAddress.parse(text)) == text
    except BadInput:
        return False
