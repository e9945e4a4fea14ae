"""Turn snapshots into the JSON documents (docs/json.md) and tables the CLI prints.

The JSON shapes are a public interface: add keys, never rename or drop them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pcimgr.core.address import PciAddress
from pcimgr.core.model import BRIDGE_CLASSES, Host, IommuGroup, PciDevice
from pcimgr.core.terminal import safe

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

    from pcimgr.host.names import Namer
    from pcimgr.plans.transaction import Plan
    from pcimgr.sriov.planner import PfView
from pcimgr.core.readiness import readiness, ready
from pcimgr.core.viability import blocks_vfio, viability

NAME_WIDTH = 44


def device_json(d: PciDevice, namer: Namer, holders: list[str] | None = None,
                host_use: list[str] | None = None) -> dict[str, Any]:
    """holders: the domains that have the function; None when libvirt was not asked.
    host_use: what the host uses it for (safety.host_use), [] for nothing."""
    names = namer(d)
    s = d.sriov
    physfn = d.physfn
    return {
        "address": str(d.address),
        "vendor_id": d.vendor_id,
        "device_id": d.device_id,
        "vendor": names.vendor,
        "device": names.device,
        "subsystem_vendor_id": d.subsystem_vendor_id,
        "subsystem_device_id": d.subsystem_device_id,
        "class": _class_hex(d.class_code),
        "class_name": names.class_name,
        "revision": d.revision,
        "driver": d.driver,
        "driver_override": d.driver_override,
        "iommu_group": d.iommu_group,
        "numa_node": d.numa_node,
        "netdevs": list(d.netdevs),
        "is_bridge": d.class_code >> 8 in BRIDGE_CLASSES,
        "sriov": None if s is None else {
            "totalvfs": s.totalvfs,
            "numvfs": s.numvfs,
            "drivers_autoprobe": s.drivers_autoprobe,
            "vf_device_id": s.vf_device_id,
            "offset": s.offset,
            "stride": s.stride,
            "vfs": [str(a) for a in s.vfs],
        },
        "physfn": str(physfn) if physfn else None,
        "holders": holders,
        "host_use": host_use or [],
        "vfio": vfio_json(d),
    }


def vfio_json(d: PciDevice) -> dict[str, Any]:
    """How a guest can take it now (core/readiness.py; docs/json.md)."""
    r = readiness(d)
    return {"ready": bool(r.kind), "kind": r.kind or None, "driver": r.driver,
            "device": d.vfio_dev}


def readiness_text(d: PciDevice, detach_binds: str) -> str:
    r = readiness(d)
    if r.kind == "vfio-pci":
        return "ready for a guest: on vfio-pci"
    if r.kind == "variant":
        return f"ready for a guest: on {r.driver}, a VFIO variant driver"
    if r.kind == "vendor":
        return (f"ready for a guest: on {r.driver}, which registers it with VFIO itself "
                f"({d.vfio_dev}); give it as managed='no'")
    return f"not ready: `pcimgr detach {d.address}` binds {detach_binds}"


_CLASS_HEX: dict[int, str] = {}


def _class_hex(class_code: int) -> str:
    """The class as six hex digits; made once per class (thousands of functions, few classes)."""
    text = _CLASS_HEX.get(class_code)
    if text is None:
        text = _CLASS_HEX[class_code] = f"{class_code:06x}"
    return text


def group_json(group: IommuGroup, namer: Namer) -> dict[str, Any]:
    v = viability(group)
    return {
        "group": group.number,
        "viable": v.viable,
        "blockers": [str(d.address) for d in v.blockers],
        "members": [{
            "address": str(d.address),
            "vendor_id": d.vendor_id,
            "device_id": d.device_id,
            "device": namer(d).device,
            "class": f"{d.class_code:06x}",
            "driver": d.driver,
            "is_bridge": d.is_bridge,
            "blocks_vfio": blocks_vfio(d),
        } for d in group.members],
    }


def xml_json(element: ET.Element, text: str, address: PciAddress | None,
             net_mode: str | None = None) -> dict[str, Any]:
    """`pcimgr xml --json`: the element's fields, read back from the element itself, and
    the XML as printed."""
    source = element.find("source/address")
    parts = {k: None if source is None else source.get(k)
             for k in ("domain", "bus", "slot", "function")}
    managed = element.get("managed")
    mac = element.find("mac")
    tag = element.find("vlan/tag")
    return {
        "element": element.tag,
        "type": element.get("type"),
        "mode": element.get("mode"),
        "managed": None if managed is None else managed == "yes",
        "address": None if address is None else str(address),
        **parts,
        "uuid": None if source is None else source.get("uuid"),  # an mdev's
        "net_mode": net_mode,
        "mac": None if mac is None else mac.get("address"),
        "vlan": None if tag is None else int(tag.get("id") or "0"),
        "xml": text,
    }


def device_name(d: PciDevice, namer: Namer) -> str:
    return namer(d).device or namer(d).class_name or "device"


def device_label(d: PciDevice, namer: Namer, width: int | None = NAME_WIDTH) -> str:
    """The name shortened to width (None: whole), then the ids, which are never cut."""
    name = device_name(d, namer)
    if width is not None and len(name) > width:
        name = name[:width - 1] + "…"
    return f"{name} [{d.ids}]"


def sriov_cell(d: PciDevice, mdev_parent: bool = False) -> str:
    if d.sriov is not None:
        return f"{d.sriov.numvfs}/{d.sriov.totalvfs} VFs"
    if d.physfn is not None:
        return f"VF of {d.physfn.short}"
    return "mdev parent" if mdev_parent else ""  # `pcimgr mdev types ADDR`


def list_rows(devices: list[PciDevice], namer: Namer, uses: Callable[[PciDevice], list[str]],
              holders: Callable[[PciAddress], list[str] | None] | None = None,
              name_width: int | None = NAME_WIDTH,
              overrides: bool = False,
              mdev_parents: frozenset[str] = frozenset()) -> list[list[str]]:
    """Rows in address order, each VF right under its PF when both are shown; with
    holders, a last column of the domains that have each function. The driver carries
    OVERRIDE_MARK when driver_override is set; with overrides, a column shows it instead."""
    shown = {d.address for d in devices}
    children: dict[Any, list[PciDevice]] = {}
    top = []
    for d in devices:
        if d.physfn is not None and d.physfn in shown:
            children.setdefault(d.physfn, []).append(d)
        else:
            top.append(d)
    rows = []
    for d in top:
        rows.append(_row(d, namer, "", uses(d), name_width, overrides, mdev_parents))
        rows += [_row(vf, namer, "  ", uses(vf), name_width, overrides, mdev_parents)
                 for vf in children.get(d.address, [])]
    if holders is not None:
        for row in rows:
            row.append(", ".join(holders(PciAddress.parse(row[0].strip())) or []) or "-")
    return rows


LIST_HEADERS = ["ADDRESS", "DEVICE", "DRIVER", "IOMMU", "NUMA", "NETDEVS", "SR-IOV", "HOST USE"]
HOLDER_HEADER = "GUEST"
OVERRIDE_HEADER = "OVERRIDE"
OVERRIDE_MARK = "*"
OVERRIDE_FOOTNOTE = ("pcimgr: note: * driver_override is set: the kernel binds only that "
                     "driver to the "
                     "function, also after a reprobe (`pcimgr list --overrides`)")
MIN_NAME_WIDTH = 12


def list_headers(overrides: bool, holders: bool) -> list[str]:
    headers = list(LIST_HEADERS)
    if overrides:
        headers.insert(headers.index("DRIVER") + 1, OVERRIDE_HEADER)
    return headers + ([HOLDER_HEADER] if holders else [])


def _row(d: PciDevice, namer: Namer, indent: str, uses: list[str], name_width: int | None,
         overrides: bool, mdev_parents: frozenset[str] = frozenset()) -> list[str]:
    driver = d.driver or "-"
    if overrides:
        driver_cells = [driver, d.driver_override or "-"]
    else:
        driver_cells = [driver + (OVERRIDE_MARK if d.driver_override is not None else "")]
    return [indent + str(d.address), device_label(d, namer, name_width), *driver_cells,
            _opt(d.iommu_group), _opt(d.numa_node), ",".join(d.netdevs) or "-",
            sriov_cell(d, str(d.address) in mdev_parents), use_cell(uses)]


def fitted(devices: list[PciDevice], namer: Namer,
           rows: Callable[[int | None], list[list[str]]], headers: list[str],
           columns: int | None) -> str:
    """The table, its DEVICE names shortened until its lines fit `columns` (a terminal's
    width), never below MIN_NAME_WIDTH; columns None: the names whole (`--wide`)."""
    if columns is None:
        return table(rows(None), headers)
    width = min(NAME_WIDTH, max((len(device_name(d, namer)) for d in devices), default=0))
    text = table(rows(NAME_WIDTH), headers)
    while width > MIN_NAME_WIDTH:
        over = max(len(line) for line in text.splitlines()) - columns
        if over <= 0:
            break
        width = max(MIN_NAME_WIDTH, width - over)
        text = table(rows(width), headers)
    # still too wide with the names at their shortest: the last column (host use, the
    # guest: a summary `show` gives whole) gives way
    return "\n".join(line if len(line) <= columns else line[:max(columns - 1, 1)] + "…"
                     for line in text.splitlines())


def select_columns(headers: list[str], rows: list[list[str]],
                   wanted: tuple[str, ...] | None) -> tuple[list[str], list[list[str]]]:
    """`list -o FIELD,...`: those columns in that order (names as the headers, any case,
    `-` or `_` for a space); BadInput naming the fields there are."""
    if not wanted:
        return headers, rows
    keys = [h.lower().replace(" ", "-") for h in headers]
    picked = []
    for w in wanted:
        key = w.strip().lower().replace("_", "-")
        if key not in keys:
            from pcimgr.core.errors import BadInput
            raise BadInput(f"-o: no field {w!r}; the fields are {','.join(keys)}")
        picked.append(keys.index(key))
    return [headers[i] for i in picked], [[r[i] for i in picked] for r in rows]


def use_cell(uses: list[str]) -> str:
    """The first use, and how many more `show` lists: a table row stays one line."""
    if not uses:
        return "-"
    return uses[0] + (f" (+{len(uses) - 1})" if len(uses) > 1 else "")


def _opt(value: int | str | None) -> str:
    return "-" if value is None else str(value)


def iommu_off_notice(host: Host) -> str | None:
    if host.iommu_enabled:
        return None
    return ("pcimgr: note: IOMMU is off: no IOMMU groups exist, so nothing can be passed "
            "through. "
            "Add intel_iommu=on (Intel) or amd_iommu=on (AMD) to the kernel command line "
            "and reboot.")


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Every cell made safe for a terminal (names come from udev's database, pci.ids, the
    host's facts) and kept to one line, in columns: tabulate's "plain" format (left-aligned
    text, two spaces between columns, a column at least its header and two wide, no
    trailing blanks; characters counted as tabulate counts them without wcwidth), which
    pcimgr printed through tabulate until its import (~4 ms, with html and textwrap) was a
    tenth of `list` (tests/test_table.py holds the two equal)."""
    cells = [[safe(cell) for cell in row] for row in rows]
    ncols = max([len(headers)] + [len(row) for row in cells])
    heads = [""] * (ncols - len(headers)) + headers  # tabulate puts short headers right
    cells = [row + [""] * (ncols - len(row)) for row in cells]
    widths = [len(h) + 2 for h in heads]  # characters, as tabulate counts without wcwidth
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in [heads, *cells])


GROUP_HEADERS = ["GROUP", "VFIO", "ADDRESS", "DRIVER", "DEVICE"]


def _viable_cell(group: IommuGroup) -> str:
    v = viability(group)
    if v.viable:
        return "viable"
    n = len(v.blockers)
    return f"blocked ({n} on host driver{'s' if n > 1 else ''})"


def group_rows(host: Host, namer: Namer) -> list[list[str]]:
    rows = []
    for group in host.groups.values():
        for i, d in enumerate(group.members):
            mark = " (bridge)" if d.is_bridge else ""
            rows.append([str(group.number) if i == 0 else "",
                         _viable_cell(group) if i == 0 else "",
                         str(d.address), (d.driver or "-") + mark, device_label(d, namer)])
    return rows


def show_text(d: PciDevice, group: IommuGroup | None, namer: Namer,
              vfs: list[PciDevice], uses: list[str],
              insight: tuple[tuple[str, str], ...] = (), why: tuple[str, ...] = (),
              ready_lines: tuple[tuple[str, str], ...] = ()) -> str:
    """insight: more fields (link, reset) after host use; why: why the group is shared;
    ready_lines: how a guest takes it, and its VFIO device nodes, after the driver."""
    names = namer(d)
    lines = [f"{d.address}  {names.device or 'unknown device'}"]

    def field(label: str, value: object) -> None:
        lines.append(f"  {label:<16}{value}")

    field("vendor", f"{names.vendor or 'unknown'} [{d.vendor_id}]")
    field("device", f"{names.device or 'unknown'} [{d.device_id}]")
    if d.subsystem_vendor_id:
        field("subsystem", f"{d.subsystem_vendor_id}:{d.subsystem_device_id}")
    field("class", f"{names.class_name or 'unknown'} [{d.class_code:06x}]")
    field("revision", d.revision or "-")
    field("driver", d.driver or "none")
    field("driver_override", d.driver_override or "none")
    for label, value in ready_lines:
        field(label, value)
    field("iommu group", _opt(d.iommu_group))
    field("numa node", _opt(d.numa_node))
    field("netdevs", ", ".join(d.netdevs) or "none")
    if d.sriov is not None:
        s = d.sriov
        autoprobe = {True: "on", False: "off", None: "?"}[s.drivers_autoprobe]
        field("sr-iov", f"{s.numvfs}/{s.totalvfs} VFs, VF id {_opt(s.vf_device_id)}, "
                        f"offset {_opt(s.offset)}, stride {_opt(s.stride)}, "
                        f"autoprobe {autoprobe}")
        for vf in vfs:
            field("", f"VF {vf.address}  {vf.driver or 'no driver'}")
    if d.physfn is not None:
        field("physical fn", str(d.physfn))
    field("host use", uses[0] if uses else "none")
    for use in uses[1:]:
        field("", use)
    for label, value in insight:
        field(label, value)
    lines.append("")
    if group is None:
        lines.append("Not in an IOMMU group: the IOMMU is off (intel_iommu=on / amd_iommu=on).")
        return "\n".join(safe(line) for line in lines)
    v = viability(group)
    state = "viable for VFIO" if v.viable else (
        "not viable for VFIO until these leave their host drivers: "
        + ", ".join(f"{b.address} ({b.driver})" for b in v.blockers))
    lines.append(f"IOMMU group {group.number}: {state}")
    for m in group.members:
        role = "bridge, ignored by VFIO" if m.is_bridge else (
            "this function" if m.address == d.address else "endpoint")
        lines.append(f"  {m.address}  {(m.driver or 'no driver'):<13} {device_label(m, namer)}"
                     f"  ({role})")
    lines += [f"  why shared: {line}" if i == 0 else f"              {line}"
              for i, line in enumerate(why)]
    return "\n".join(safe(line) for line in lines)


def moves(plan: Plan, host: Host) -> str:
    """What a plan did, function by function, and what VFIO can use now."""
    from pcimgr.drivers.binding import BindDriver, Reprobe  # only changes get here
    lines, groups = [], set()
    for step in plan.steps:
        if not isinstance(step, (BindDriver, Reprobe)):  # its summary says it all
            lines.append(step.summary())
            continue
        now = host.get(PciAddress.parse(step.address))
        driver = now.driver if now else None
        lines.append(f"{step.address}: {step.original_driver or 'no driver'} -> "
                     f"{driver or 'no driver'}")
        if now is not None and ready(now) and now.iommu_group is not None:
            groups.add(now.iommu_group)
    for n in sorted(groups):
        v = viability(host.groups[n])
        lines.append(f"IOMMU group {n} is viable for VFIO (/dev/vfio/{n})" if v.viable else
                     f"IOMMU group {n} is not viable yet: " +
                     ", ".join(f"{b.address} on {b.driver}" for b in v.blockers))
    return "\n".join(safe(line) for line in lines)


# -- SR-IOV (`pcimgr vfs list`) ---------------------------------------------------

VF_HEADERS = ["VF", "ADDRESS", "DRIVER", "IOMMU", "NETDEVS", "MAC", "VLAN", "QOS", "TRUST",
              "SPOOFCHK", "HELD BY"]


def vfs_json(view: PfView, namer: Namer,
             holders: Callable[[PciAddress], list[str] | None] = lambda a: None,
             pools: dict[str, tuple[str, int]] | None = None) -> dict[str, Any]:
    """pools: PF address -> (the pool it feeds, how many of its VFs the pool has)."""
    pf, s = view.pf, view.pf.sriov
    assert s is not None
    pool, pooled = (pools or {}).get(str(pf.address), (None, 0))
    return {
        "address": str(pf.address),
        "vendor_id": pf.vendor_id,
        "device_id": pf.device_id,
        "device": namer(pf).device,
        "driver": pf.driver,
        "netdevs": list(pf.netdevs),
        "link_up": view.link_up,
        "totalvfs": s.totalvfs,
        "numvfs": s.numvfs,
        "vf_device_id": s.vf_device_id,
        "drivers_autoprobe": s.drivers_autoprobe,
        "offset": s.offset,
        "stride": s.stride,
        "pool": pool,
        "vfs": [_vf_json(i, vf, view) | {"holders": holders(vf.address),
                                         "pool": pool if i < pooled else None}
                for i, vf in enumerate(view.vfs)],
    }


def _vf_json(index: int, vf: PciDevice, view: PfView) -> dict[str, Any]:
    from pcimgr.core.vfconfig import VfConfig  # VF views only: `list` never needs it
    config = view.configs[index] if index < len(view.configs) else VfConfig()
    return {
        "index": index,
        "address": str(vf.address),
        "driver": vf.driver,
        "driver_override": vf.driver_override,
        "iommu_group": vf.iommu_group,
        "netdevs": list(vf.netdevs),
        "mac": config.get("mac"),
        "vlan": config.get("vlan"),
        "qos": config.get("qos"),
        "spoofchk": config.get("spoofchk"),
        "trust": config.get("trust"),
        "link_state": config.get("link_state"),
        "open_by": view.holders.get(vf.iommu_group, []) if vf.iommu_group is not None else [],
    }


def vfs_text(views: list[PfView], namer: Namer,
             holders: Callable[[PciAddress], list[str] | None] = lambda a: None,
             pools: dict[str, tuple[str, int]] | None = None) -> str:
    if not views:
        return "No SR-IOV capable functions on this host."
    blocks = []
    for view in views:
        data = vfs_json(view, namer, holders, pools)
        link = {None: "", True: ", link up", False: ", link DOWN"}[view.link_up]
        autoprobe = {None: "", True: ", autoprobe on", False: ", autoprobe off"}[
            data["drivers_autoprobe"]]
        head = (f"{data['address']}  {device_label(view.pf, namer)}  "
                f"{data['driver'] or 'no driver'}  {','.join(data['netdevs']) or '-'}\n"
                f"  {data['numvfs']}/{data['totalvfs']} VFs (VF device {data['vf_device_id']})"
                f"{autoprobe}{link}" + (f", pool {data['pool']}" if data["pool"] else ""))
        rows = [[str(v["index"]), v["address"], v["driver"] or "-", _opt(v["iommu_group"]),
                 ",".join(v["netdevs"]) or "-", v["mac"] or "-",
                 _opt(v["vlan"]) if v["vlan"] else "-", _opt(v["qos"]) if v["vlan"] else "-",
                 _onoff(v["trust"]), _onoff(v["spoofchk"]),
                 ", ".join((v["holders"] or []) + v["open_by"]) or "-"]
                for v in data["vfs"]]
        head = "\n".join(safe(line) for line in head.split("\n"))
        blocks.append(head + ("\n" + _indent(table(rows, VF_HEADERS)) if rows else ""))
    return "\n\n".join(blocks)


def _onoff(value: bool | None) -> str:
    return "-" if value is None else ("on" if value else "off")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
