"""Read commands: list, show, groups, xml."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import (
    ADDRESS,
    ADDRESS_OR_MDEV,
    DRIVER,
    emit_json,
    json_option,
    mac_option,
    terminal_columns,
    vlan_option,
)
from pcimgr.core.address import PciAddress
from pcimgr.core.model import Host, PciDevice
from pcimgr.core.terminal import safe

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET


@click.command("list")
@click.option("--all", "show_all", is_flag=True, help="Every function, not only network ones.")
@click.option("--class", "klass", metavar="CLASS", multiple=True,
              help="net, storage, display, bridge, ... or a hex class prefix (02, 0c03); "
                   "repeat it or separate with commas for several.")
@click.option("--vendor", metavar="VENDOR", multiple=True,
              help="Hex vendor id (8086) or part of its name; several: repeat or commas.")
@click.option("--driver", type=DRIVER, metavar="DRIVER", multiple=True,
              help="Bound driver name, or 'none'; several: igb,i40e or repeat --driver.")
@click.option("--overrides", is_flag=True,
              help="Only functions whose driver_override is set (of every class unless "
                   "--class), with the override.")
@click.option("--wide", is_flag=True,
              help="Whole device names, even wider than the terminal.")
@click.option("-o", "--output", "fields", metavar="FIELD,...",
              help="Only these columns, in this order: address, device, driver, override, "
                   "iommu, numa, netdevs, sr-iov, host-use, guest.")
@json_option
@click.pass_obj
def list_cmd(obj: Context, show_all: bool, klass: tuple[str, ...], vendor: tuple[str, ...],
             driver: tuple[str, ...], overrides: bool, wide: bool, fields: str | None,
             as_json: bool) -> None:
    """PCI functions with driver, IOMMU group, NUMA node, netdevs and SR-IOV state.

    Network functions (class 02) by default; VFs are shown under their PF. A `*` after
    the driver: the function's driver_override is set.
    """
    from pcimgr.cli import filters, render
    from pcimgr.cli.runner import mention_unfinished
    from pcimgr.drivers import safety
    from pcimgr.host import usage
    predicates = []
    if klass:
        predicates.append(filters.any_of(klass, filters.class_filter))
    elif not show_all and not overrides:
        predicates.append(filters.class_filter("net"))
    if vendor:
        predicates.append(filters.any_of(vendor, lambda v: filters.vendor_filter(v, obj.namer)))
    if driver:
        predicates.append(filters.any_of(driver, filters.driver_filter))
    if overrides:
        predicates.append(filters.overridden)
    host = obj.host()
    devices = filters.select(host.devices, predicates)
    survey = usage.survey(obj.machine, deep=False)  # no /proc scan for every listing
    mention_unfinished(obj)

    sysfs = obj.sysfs

    def uses(d: PciDevice) -> list[str]:
        return safety.host_use(sysfs, d, survey)
    if as_json:
        namer = obj.namer
        holders = obj.holders if obj.holdings() is not None else _unasked
        emit_json([render.device_json(d, namer, holders(d.address), uses(d))
                   for d in devices])
        return
    notice = render.iommu_off_notice(host)
    if notice:
        click.echo(notice, err=True)
    if not devices:
        click.echo("No function has a driver_override." if overrides and not (klass or vendor
                                                                              or driver)
                   else "No matching PCI functions (try --all).")
        return
    known = obj.holdings() is not None

    wanted = tuple(fields.split(",")) if fields else None
    all_headers = render.list_headers(overrides or any(
        w.strip().lower() == "override" for w in wanted or ()), known)
    headers, _ = render.select_columns(all_headers, [], wanted)  # a bad field: before output

    parents: frozenset[str] = frozenset()
    if sysfs.list_dir("class/mdev_bus"):  # host/mdevs.py's PARENTS: read only with parents
        from pcimgr.host import mdevs
        parents = frozenset(mdevs.parent_names(sysfs))

    def rows(width: int | None) -> list[list[str]]:
        found = render.list_rows(devices, obj.namer, uses, obj.holders if known else None,
                                 width, "OVERRIDE" in all_headers, parents)
        return render.select_columns(all_headers, found, wanted)[1]
    columns = terminal_columns()
    if wide:
        click.echo(render.fitted(devices, obj.namer, rows, headers, None))
    elif columns is None:
        click.echo(render.table(rows(render.NAME_WIDTH), headers))
    else:
        click.echo(render.fitted(devices, obj.namer, rows, headers, columns))
    if obj.holdings_problem:
        click.echo(safe(obj.holdings_problem), err=True)
    if not overrides and any(d.driver_override is not None for d in devices):
        click.echo(render.OVERRIDE_FOOTNOTE, err=True)


def _unasked(address: PciAddress) -> None:
    """holders() where libvirt was not asked (or could not be): null in every row."""


@click.command()
@click.argument("address", type=ADDRESS)
@json_option
@click.pass_obj
def show(obj: Context, address: PciAddress, as_json: bool) -> None:
    """Everything known about one function, its IOMMU group and its hostdev XML."""
    from pcimgr.cli import render
    from pcimgr.cli.runner import mention_unfinished
    from pcimgr.core import hostdev_xml
    from pcimgr.drivers import safety
    from pcimgr.host import discovery, topology, usage
    device = discovery.require(obj.sysfs, address)
    survey = usage.survey(obj.machine)
    mention_unfinished(obj)
    group = None if device.iommu_group is None else discovery.read_group(obj.sysfs,
                                                                         device.iommu_group)
    from pcimgr.core.readiness import readiness
    now = readiness(device)
    binds, model = xml_driver(obj, device)
    xml = hostdev_xml.to_string(hostdev_xml.hostdev(device.address, now.kind != "vendor",
                                                    model))
    nodes = vfio_nodes(obj, device)
    topo = topology.neighbourhood(obj.sysfs, address)
    reset = topo.reset(address)
    node = topo.nodes[address]
    members = [m.address for m in group.members] if group else []
    why = topology.around(obj.sysfs, members).why_shared(members)
    from pcimgr.cli import mdev_render
    mdev_parent, vgpu = mdev_render.of_function(obj.sysfs, str(address))
    if as_json:
        emit_json(render.device_json(device, obj.namer, obj.holders(device.address),
                                     safety.host_use(obj.sysfs, device, survey))
                  | {"group": (render.group_json(group, obj.namer) | {"why": why}
                               if group else None),
                     "hostdev_xml": xml,
                     "detach_binds": None if now.kind else binds,
                     "vfio_nodes": nodes,
                     "link": None if node.link is None else {
                         "speed_gts": node.link.speed, "width": node.link.width},
                     "link_max": None if node.link_max is None else {
                         "speed_gts": node.link_max.speed, "width": node.link_max.width},
                     "degraded": topo.degraded(address),
                     "reset": {"methods": list(reset.methods),
                               "function_level": reset.function_level,
                               "bus_collateral": [str(a) for a in reset.bus_collateral]}}
                  | mdev_render.function_json(mdev_parent, vgpu))
        return
    insight = []
    if node.link is not None:
        degraded = topo.degraded(address)
        best = f" (max {node.link_max})" if node.link_max not in (None, node.link) else ""
        insight.append(("pcie link", f"{node.link}{best}"
                        + (f"  DEGRADED: {degraded}" if degraded else "")))
    insight.append(("reset", ", ".join(reset.methods) or "none the kernel can use"))
    if reset.bus_collateral:
        insight.append(("bus reset hits", ", ".join(str(a) for a in reset.bus_collateral)))
    insight += mdev_render.function_fields(mdev_parent, vgpu)
    vfs = discovery.read_many(obj.sysfs, device.sriov.vfs) if device.sriov else []
    ready_lines = [("vfio", render.readiness_text(device, binds))]
    backends = [f"{label}: {' + '.join(found)}" for label, found in
                (("group", nodes["group"]), ("iommufd", nodes["cdev"])) if found]
    if backends:
        ready_lines.append(("vfio nodes", "; ".join(backends)))
    click.echo(render.show_text(device, group, obj.namer, vfs,
                                safety.host_use(obj.sysfs, device, survey, long=True),
                                tuple(insight), tuple(why), tuple(ready_lines)))
    holders = obj.holders(device.address)
    if holders is not None:
        click.echo(safe(f"Guests:        {', '.join(holders) or 'none'}"))
    elif obj.holdings_problem:
        click.echo(safe(obj.holdings_problem), err=True)
    click.echo("")
    click.echo("libvirt hostdev XML (`pcimgr xml` prints it alone):")
    click.echo(safe(xml, lines=True))


def vfio_nodes(obj: Context, device: PciDevice) -> dict[str, list[str] | None]:
    """The device nodes a consumer opens for each IOMMU backend: the group interface
    (/dev/vfio/vfio + /dev/vfio/N: QEMU, DPDK, mdevs) and IOMMUFD's device cdev (/dev/iommu
    + /dev/vfio/devices/vfioN, Linux >= 6.6 with VFIO_DEVICE_CDEV: its vfio-dev has a
    `dev`). None for a backend the function cannot use now; never mixed."""
    from pcimgr.core.readiness import ready
    from pcimgr.host.sysfs import device_path
    group = (["/dev/vfio/vfio", f"/dev/vfio/{device.iommu_group}"]
             if device.iommu_group is not None and ready(device) else None)
    cdev = (["/dev/iommu", f"/dev/vfio/devices/{device.vfio_dev}"]
            if device.vfio_dev is not None and obj.sysfs.exists(
                device_path(device.address, "vfio-dev", device.vfio_dev, "dev")) else None)
    return {"group": group, "cdev": cdev}


@click.command()
@click.option("--why", is_flag=True,
              help="For each shared group, why its functions share it (ACS, multifunction "
                   "devices, conventional PCI bridges) and the way out; needs root.")
@json_option
@click.pass_obj
def groups(obj: Context, why: bool, as_json: bool) -> None:
    """IOMMU groups, their members, and whether VFIO can use each group now."""
    from pcimgr.cli import render
    from pcimgr.cli.runner import mention_unfinished
    host = obj.host()
    mention_unfinished(obj)
    reasons = _why_shared(obj, host) if why else {}
    if as_json:
        emit_json([render.group_json(g, obj.namer)
                   | ({"why": reasons.get(g.number, [])} if why else {})
                   for g in host.groups.values()])
        return
    notice = render.iommu_off_notice(host)
    if notice:
        click.echo(notice)
        return
    click.echo(render.table(render.group_rows(host, obj.namer), render.GROUP_HEADERS))
    for number, lines in reasons.items():
        click.echo(f"\nGroup {number} is shared:")
        click.echo("\n".join(safe(f"  - {line}") for line in lines))


def _why_shared(obj: Context, host: Host) -> dict[int, list[str]]:
    from pcimgr.host import topology
    shared = {n: [m.address for m in g.members] for n, g in host.groups.items()
              if len(g.members) > 1}
    topo = topology.around(obj.sysfs, [a for members in shared.values() for a in members])
    return {n: topo.why_shared(members) for n, members in shared.items()}


@click.command()
@click.argument("address", required=False, type=ADDRESS_OR_MDEV)
@click.option("--unmanaged", is_flag=True,
              help="managed='no': libvirt leaves host driver binding to you (or pcimgr).")
@click.option("--interface", is_flag=True,
              help="<interface type='hostdev'> (an SR-IOV VF as a NIC) instead of <hostdev>.")
@click.option("--mode", type=click.Choice(["e1000", "virtio", "vhost", "macvtap"]),
              help="An emulated or paravirtual NIC instead (no ADDRESS): e1000, virtio, "
                   "vhost (virtio + vhost_net), macvtap.")
@click.option("--bridge", metavar="BR", help="Host bridge for e1000, virtio and vhost.")
@click.option("--source-dev", metavar="DEV", help="Host NIC for macvtap.")
@mac_option
@vlan_option
@click.option("--json", "as_json", is_flag=True,
              help="The element's fields and the XML as JSON (docs/json.md).")
@click.pass_obj
def xml(obj: Context, address: PciAddress | str | None, unmanaged: bool, interface: bool,
        mode: str | None, bridge: str | None, source_dev: str | None, mac: str | None,
        vlan: int | None, as_json: bool) -> None:
    """libvirt XML for a guest NIC: <hostdev> or <interface type='hostdev'> for a function
    on this host (or an mdev by its UUID), or with --mode the <interface> of an
    emulated/paravirtual mode."""
    from pcimgr.core import hostdev_xml
    from pcimgr.core.errors import BadInput
    from pcimgr.host import discovery
    if isinstance(address, str):  # an mdev
        if mode or interface or unmanaged or mac or vlan:
            raise BadInput("an mdev's XML is its <hostdev type='mdev'>: give the UUID alone")
        import xml.etree.ElementTree as ET

        from pcimgr.guests import mdev_assign
        text = mdev_assign.xml(obj.machine, address)
        if as_json:
            from pcimgr.cli import render
            emit_json(render.xml_json(ET.fromstring(text), text, None))
        else:
            click.echo(safe(text, lines=True))
        return
    if mode is not None:
        from pcimgr.advice import netmodes
        if address is not None or vlan or interface or unmanaged:
            raise BadInput("--mode takes no ADDRESS and no --interface/--unmanaged/--vlan; "
                           "give --bridge BR (or --source-dev DEV for macvtap) and --mac")
        _print_xml(netmodes.interface(mode, bridge, source_dev, mac), None, mode, as_json)
        return
    if address is None:
        raise BadInput("give the ADDRESS of a function, or --mode for an emulated NIC")
    device = discovery.require(obj.sysfs, address)
    if (mac or vlan) and not interface:
        raise BadInput("--mac and --vlan belong to the interface form; add --interface")
    _, model = xml_driver(obj, device)
    element = (hostdev_xml.interface(address, not unmanaged, mac, vlan, model) if interface
               else hostdev_xml.hostdev(address, not unmanaged, model))
    _print_xml(element, address, None, as_json)


def xml_driver(obj: Context, device: PciDevice) -> tuple[str, str | None]:
    """What detach would bind, and the XML's <driver model=...>: the variant the function is
    on, or would be on after detach; None for vfio-pci and a vendor's provider."""
    from pcimgr.core.readiness import VFIO_PCI, readiness
    from pcimgr.drivers import planner as drivers
    now = readiness(device)
    binds = drivers.targets_of(obj.machine, [device], None)[device.address]
    end = now.driver if now.kind else binds
    return binds, (end if now.kind != "vendor" and end != VFIO_PCI else None)


def _print_xml(element: ET.Element, address: PciAddress | None, mode: str | None,
               as_json: bool) -> None:
    from pcimgr.core import hostdev_xml
    text = hostdev_xml.to_string(element)
    if as_json:
        from pcimgr.cli import render
        emit_json(render.xml_json(element, text, address, mode))
    else:
        click.echo(safe(text, lines=True))
