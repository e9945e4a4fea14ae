"""The shape facts must have before an export reads them (docs/fleet.md, "Facts' limits").

Facts come from other hosts, or from a file anyone may have edited: every field an export
reads is checked here for its type, its form (ids of 4 hex digits, canonical PCI
addresses, host, driver and interface names) and its size, and every address a definition
or a VF names must be a function of the same facts, so that an export never meets a value
it cannot place. Fields no export reads are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pcimgr.core import fleetnames
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput

MAX_ITEMS = 65536          # functions, groups, PFs, definitions, a PF's VFs, a list's names
MAX_TEXT = 1024            # free text: device names, drift descriptions
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}")
ID = re.compile(r"[0-9a-f]{4}")                            # vendor and device ids, lower case
CLASS = re.compile(r"[0-9a-f]{6}")
DRIVER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")   # a kernel module's name
NETDEV = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")   # IFNAMSIZ less its NUL
MDEV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}")  # core/mdev.py's rule


class Invalid(BadInput):
    """A field of the facts that is not what pcimgr writes: where, and what is wrong."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where


Check = Callable[[Any, str], None]


def check(data: Any) -> None:
    """Raise Invalid for the first field not of the documented shape."""
    _record(TOP)(data, "facts")
    if "mdevs" in data:  # facts of pcimgr before mdevs have none
        _list(MDEV)(data["mdevs"], "facts.mdevs")
        seen: set[str] = set()
        for i, m in enumerate(data["mdevs"]):
            if m["uuid"] in seen:
                raise Invalid(f"mdevs[{i}].uuid", f"{m['uuid']} is listed twice")
            seen.add(m["uuid"])
    devices = {d["address"] for d in data["devices"]}
    _unique(data["devices"], "devices")
    _unique(data["vfs"], "vfs")
    _unique(data["definitions"], "definitions")
    pfs = {p["address"] for p in data["vfs"]}
    for i, pf in enumerate(data["vfs"]):
        _known(pf["address"], devices, f"vfs[{i}].address")
        for j, vf in enumerate(pf["vfs"]):
            _known(vf["address"], devices, f"vfs[{i}].vfs[{j}].address")
    for i, d in enumerate(data["definitions"]):
        where = f"definitions[{i}]"
        _known(d["address"], devices, f"{where}.address")
        if d["driver"] is None:
            if d["vfs"] is None:
                raise Invalid(where, "defines neither a driver nor VFs")
            _known(d["address"], pfs, f"{where}.address", "vfs (PFs)")
        if not d["ok"] and not d["drift"]:
            raise Invalid(f"{where}.drift", "is empty although ok is false")
        _vf_settings(d.get("vf", {}), f"{where}.vf")


def _vf_settings(value: Any, where: str) -> None:
    """What the exports read of a PF definition's VF settings: a vGPU type and its name."""
    if not isinstance(value, dict) or len(value) > MAX_ITEMS:
        raise Invalid(where, f"is {_kind(value)}, not an object of VF settings")
    for index, settings in value.items():
        here = f"{where}.{str(index)[:20]}"
        if not (isinstance(index, str) and index.isascii() and index.isdigit()):
            raise Invalid(here, "is not a VF index")
        _record({})(settings, here)
        if "vgpu_type" in settings:
            _integer(1, 2**31 - 1)(settings["vgpu_type"], f"{here}.vgpu_type")
        if "vgpu_name" in settings:
            _text()(settings["vgpu_name"], f"{here}.vgpu_name")


def _unique(items: list[dict[str, Any]], where: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item["address"] in seen:
            raise Invalid(f"{where}[{i}].address", f"{item['address']} is listed twice")
        seen.add(item["address"])


def _known(address: str, known: set[str], where: str, among: str = "devices") -> None:
    if address not in known:
        raise Invalid(where, f"{address} is not in the facts' {among}")


# -- the field checks ----------------------------------------------------------------------

def _text(pattern: re.Pattern[str] | None = None, what: str = "") -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise Invalid(where, f"is {_kind(value)}, not a string")
        if pattern is not None and not pattern.fullmatch(value):
            raise Invalid(where, f"{value[:80]!r} is not {what}")
        if len(value) > MAX_TEXT or not value.isprintable():
            raise Invalid(where, f"is not printable text of at most {MAX_TEXT} characters")
    return check


def _host(value: Any, where: str) -> None:
    """The rule of `export --host-name` (core.fleetnames): RFC 1123 labels."""
    pattern, limit, accepted = fleetnames.RULES["host"]
    _text()(value, where)
    if len(value) > limit or not pattern.fullmatch(value):
        raise Invalid(where, f"{value[:80]!r} is not {accepted}")


def _address(value: Any, where: str) -> None:
    _text()(value, where)
    try:
        canonical = str(PciAddress.parse(value))
    except BadInput:
        canonical = ""
    if canonical != value:
        raise Invalid(where, f"{value[:80]!r} is not a PCI address as pcimgr writes it "
                             "(0000:04:00.0)")


def _integer(low: int, high: int) -> Check:
    def check(value: Any, where: str) -> None:
        if type(value) is not int or not low <= value <= high:  # bool is no number here
            raise Invalid(where, f"is {_kind(value)}, not a whole number from {low} to {high}")
    return check


def _boolean(value: Any, where: str) -> None:
    if type(value) is not bool:
        raise Invalid(where, f"is {_kind(value)}, not true or false")


def _optional(inner: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if value is not None:
            inner(value, where)
    return check


def _list(inner: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise Invalid(where, f"is {_kind(value)}, not a list")
        if len(value) > MAX_ITEMS:
            raise Invalid(where, f"has {len(value)} entries, more than {MAX_ITEMS}")
        for i, item in enumerate(value):
            inner(item, f"{where}[{i}]")
    return check


def _record(fields: dict[str, Check]) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise Invalid(where, f"is {_kind(value)}, not an object")
        for key, inner in fields.items():
            if key not in value:
                raise Invalid(f"{where}.{key}", "is missing")
            inner(value[key], f"{where}.{key}")
    return check


def _any_record(value: Any, where: str) -> None:
    _optional(_record({}))(value, where)


def _kind(value: Any) -> str:
    return {type(None): "null", bool: "true/false", int: "a number", float: "a number",
            str: "a string", list: "a list", dict: "an object"}.get(type(value), "a value")


ID_TEXT = _text(ID, "4 lower-case hex digits (8086)")
DRIVER_TEXT = _optional(_text(DRIVER, "a kernel driver's name"))
NETDEVS = _list(_text(NETDEV, "an interface name (at most 15 letters, digits, _ . -)"))
GROUP = _optional(_integer(0, 2**31 - 1))

DEVICE = _record({
    "address": _address, "vendor_id": ID_TEXT, "device_id": ID_TEXT,
    "subsystem_vendor_id": _optional(ID_TEXT), "subsystem_device_id": _optional(ID_TEXT),
    "class": _text(CLASS, "6 lower-case hex digits (020000)"), "driver": DRIVER_TEXT,
    "iommu_group": GROUP, "netdevs": NETDEVS, "sriov": _any_record,
    "physfn": _optional(_address), "vendor": _optional(_text()),
    "device": _optional(_text()),
})
VF = _record({"address": _address, "index": _integer(0, 0xFFFF), "driver": DRIVER_TEXT})
PF = _record({"address": _address, "vendor_id": ID_TEXT, "vf_device_id": _optional(ID_TEXT),
              "netdevs": NETDEVS, "vfs": _list(VF)})
DEFINITION = _record({
    "address": _address, "driver": DRIVER_TEXT, "vfs": _optional(_integer(0, 0xFFFF)),
    "ok": _boolean, "drift": _list(_text()),
})
MDEV = _record({
    "uuid": _text(re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"), "an mdev UUID"),
    "parent": _text(MDEV_NAME, "an mdev parent's name"), "pci": _optional(_address),
    "type": _text(MDEV_NAME, "an mdev type's name"), "type_name": _optional(_text()),
    "device_api": _optional(_text(DRIVER, "a device API (vfio-pci)")),
    "start": _text(re.compile("auto|manual"), "auto or manual"), "running": _boolean,
})
TOP = {
    "format": _integer(1, 1), "host": _host,
    "pcimgr_version": _text(VERSION, "a version"), "machine": _text(),
    "devices": _list(DEVICE), "groups": _list(_record({})), "vfs": _list(PF),
    "definitions": _list(DEFINITION),
}
