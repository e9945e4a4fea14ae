"""Command line: parse arguments, call one function, format its result. No logic here."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from pcimgr import __version__
from pcimgr.address import PciAddress
from pcimgr.errors import NotFound, PcimgrError

_verbose = False


class Context:
    """What every command needs, built lazily so a parse error touches nothing."""

    def __init__(self, sysfs_root: str, state_dir: str | None, lock_timeout: float,
                 connect: str | None, config_dir: str | None = None) -> None:
        self.config_dir_option = config_dir
        self.sysfs_root = sysfs_root
        self.state_dir = state_dir
        self.lock_timeout = lock_timeout
        self.connect = connect
        self._sysfs = None
        self._namer = None
        self._holdings: Any = False  # not asked yet
        self.holdings_problem: str | None = None

    @property
    def config_dir(self) -> str:
        from pcimgr import definitions
        return definitions.config_dir(self.sysfs, self.config_dir_option)

    @property
    def asked_uri(self) -> str | None:
        """The libvirt URI to ask, or None on a simulated host without one given."""
        if self.sysfs.simulated and not (self.connect or os.environ.get("LIBVIRT_DEFAULT_URI")):
            return None
        return self.uri

    @property
    def uri(self) -> str:
        from pcimgr import libvirt_adapter
        return libvirt_adapter.default_uri(self.connect)

    def libvirt(self):  # type: ignore[no-untyped-def]
        from pcimgr import libvirt_adapter
        return libvirt_adapter.connect(self.uri)

    def holdings(self):  # type: ignore[no-untyped-def]
        """Which domains hold which functions, or None when libvirt cannot be asked.

        A simulated host asks libvirt only when told which one (--connect or
        LIBVIRT_DEFAULT_URI): the host's own libvirtd knows nothing about it.
        """
        if self._holdings is False:
            self._holdings = None
            if self.asked_uri is not None:
                from pcimgr import guests
                try:
                    self._holdings = guests.scan(self.libvirt())
                except PcimgrError as e:
                    self.holdings_problem = f"(guests unknown: {e})"
        return self._holdings

    def holdings_or_fail(self):  # type: ignore[no-untyped-def]
        """For changes: every domain's devices, or the error that prevented reading them."""
        from pcimgr import guests
        if self._holdings is False or self._holdings is None:
            self._holdings = guests.scan(self.libvirt())
        return self._holdings

    def holders(self, address: PciAddress) -> list[str] | None:
        holdings = self.holdings()
        if holdings is None:
            return None  # and no import of the libvirt side at all
        from pcimgr import guests
        return guests.names(holdings, address)

    @property
    def sysfs(self):  # type: ignore[no-untyped-def]
        if self._sysfs is None:
            from pcimgr.sysfs import Sysfs
            sysfs = Sysfs(self.sysfs_root)
            if not os.path.isdir(sysfs.path("bus/pci/devices")):
                raise NotFound(f"no PCI sysfs tree at {sysfs.root} (no bus/pci/devices); give "
                               "--sysfs-root a directory laid out like /sys, e.g. one made by "
                               "`pcimgr sim create DIR`")
            self._sysfs = sysfs
        return self._sysfs

    def host(self):  # type: ignore[no-untyped-def]
        from pcimgr import discovery
        return discovery.scan(self.sysfs)

    @property
    def namer(self):  # type: ignore[no-untyped-def]
        if self._namer is None:
            from pcimgr.names import Namer
            self._namer = Namer()
        return self._namer


def _address(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(PciAddress.parse(v) for v in value)
    return PciAddress.parse(value)


def _emit_json(data: Any) -> None:
    # Indented for a person at a terminal; compact for pipes, where json's C
    # encoder (indent=None only) is ten times faster on thousands of functions.
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/json.md).")


class _Group(click.Group):
    """Turns pcimgr's expected errors into one line and their exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PcimgrError as e:
            if _verbose:
                import traceback
                traceback.print_exc()
            click.echo(f"pcimgr: {e}", err=True)
            ctx.exit(e.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort, BrokenPipeError):
            raise
        except Exception as e:  # noqa: BLE001 - last resort: one line, details with -v
            if _verbose:
                raise
            click.echo(f"pcimgr: internal error: {type(e).__name__}: {e} "
                       "(run with -v for details)", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--sysfs-root", envvar="PCIMGR_SYSFS_ROOT", default="/sys", show_default=True,
              metavar="PATH", help="Root of the sysfs tree (a simulated host's directory).")
@click.option("--state-dir", envvar="PCIMGR_STATE_DIR", metavar="PATH",
              help="Journal, lock and original-driver records [default: /var/lib/pcimgr, "
                   "or inside a simulated host].")
@click.option("--lock-timeout", envvar="PCIMGR_LOCK_TIMEOUT", type=click.FloatRange(0, 3600),
              default=30.0, show_default=True, metavar="SECONDS",
              help="How long a change waits for another pcimgr to finish.")
@click.option("--config-dir", envvar="PCIMGR_CONFIG_DIR", metavar="PATH",
              help="Device definitions [default: /etc/pcimgr, or inside a simulated host].")
@click.option("-c", "--connect", metavar="URI",
              help="libvirt connection [env LIBVIRT_DEFAULT_URI; default qemu:///system].")
@click.option("-v", "--verbose", is_flag=True, help="Show details (tracebacks) on errors.")
@click.version_option(__version__, prog_name="pcimgr")
@click.pass_context
def cli(ctx: click.Context, sysfs_root: str, state_dir: str | None, lock_timeout: float,
        config_dir: str | None, connect: str | None, verbose: bool) -> None:
    """PCI passthrough and SR-IOV device manager for KVM/libvirt hosts."""
    global _verbose
    _verbose = verbose
    ctx.obj = Context(sysfs_root, state_dir, lock_timeout, connect, config_dir)


@cli.command("list")
@click.option("--all", "show_all", is_flag=True, help="Every function, not only network ones.")
@click.option("--class", "klass", metavar="CLASS",
              help="net, storage, display, bridge, ... or a hex class prefix (02, 0c03).")
@click.option("--vendor", metavar="VENDOR", help="Hex vendor id (8086) or part of its name.")
@click.option("--driver", metavar="DRIVER", help="Bound driver name, or 'none'.")
@json_option
@click.pass_obj
def list_cmd(obj: Context, show_all: bool, klass: str | None, vendor: str | None,
             driver: str | None, as_json: bool) -> None:
    """PCI functions with driver, IOMMU group, NUMA node, netdevs and SR-IOV state.

    Network functions (class 02) by default; VFs are shown under their PF.
    """
    from pcimgr import filters, render
    predicates = []
    if klass is not None:
        predicates.append(filters.class_filter(klass))
    elif not show_all:
        predicates.append(filters.class_filter("net"))
    if vendor is not None:
        predicates.append(filters.vendor_filter(vendor, obj.namer))
    if driver is not None:
        predicates.append(filters.driver_filter(driver))
    host = obj.host()
    devices = filters.select(host.devices, predicates)
    if as_json:
        _emit_json([render.device_json(d, obj.namer, obj.holders(d.address)) for d in devices])
        return
    notice = render.iommu_off_notice(host)
    if notice:
        click.echo(notice)
    if not devices:
        click.echo("No matching PCI functions (try --all).")
        return
    known = obj.holdings() is not None
    click.echo(render.table(render.list_rows(devices, obj.namer, obj.holders if known else None),
                            render.LIST_HEADERS + ([render.HOLDER_HEADER] if known else [])))
    if obj.holdings_problem:
        click.echo(obj.holdings_problem)


@cli.command()
@click.argument("address", callback=_address)
@json_option
@click.pass_obj
def show(obj: Context, address: PciAddress, as_json: bool) -> None:
    """Everything known about one function, its IOMMU group and its hostdev XML."""
    from pcimgr import discovery, hostdev_xml, render
    device = discovery.require(obj.sysfs, address)
    group = None if device.iommu_group is None else discovery.read_group(obj.sysfs,
                                                                         device.iommu_group)
    xml = hostdev_xml.to_string(hostdev_xml.hostdev(device.address))
    if as_json:
        _emit_json(render.device_json(device, obj.namer, obj.holders(device.address))
                   | {"group": render.group_json(group, obj.namer) if group else None,
                      "hostdev_xml": xml})
        return
    vfs = discovery.read_many(obj.sysfs, device.sriov.vfs) if device.sriov else []
    click.echo(render.show_text(device, group, obj.namer, vfs))
    holders = obj.holders(device.address)
    if holders is not None:
        click.echo(f"Guests:        {', '.join(holders) or 'none'}")
    elif obj.holdings_problem:
        click.echo(obj.holdings_problem)
    click.echo("")
    click.echo("libvirt hostdev XML (`pcimgr xml` prints it alone):")
    click.echo(xml)


@cli.command()
@json_option
@click.pass_obj
def groups(obj: Context, as_json: bool) -> None:
    """IOMMU groups, their members, and whether VFIO can use each group now."""
    from pcimgr import render
    host = obj.host()
    if as_json:
        _emit_json([render.group_json(g, obj.namer) for g in host.groups.values()])
        return
    notice = render.iommu_off_notice(host)
    if notice:
        click.echo(notice)
        return
    click.echo(render.table(render.group_rows(host, obj.namer), render.GROUP_HEADERS))


def _mac(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from pcimgr import vfinfo
    return None if value is None else vfinfo.check_mac(value)


mac_option = click.option("--mac", callback=_mac, help="The MAC address the guest sees.")
vlan_option = click.option("--vlan", type=click.IntRange(1, 4094),
                           help="VLAN tag applied by the PF to the VF's traffic.")


@cli.command()
@click.argument("address", required=False, callback=_address)
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
@click.pass_obj
def xml(obj: Context, address: PciAddress | None, unmanaged: bool, interface: bool,
        mode: str | None, bridge: str | None, source_dev: str | None, mac: str | None,
        vlan: int | None) -> None:
    """libvirt XML for a guest NIC: <hostdev> or <interface type='hostdev'> for a function
    on this host, or with --mode the <interface> of an emulated/paravirtual mode."""
    from pcimgr import discovery, hostdev_xml
    from pcimgr.errors import BadInput
    if mode is not None:
        from pcimgr import netmodes
        if address is not None or vlan or interface or unmanaged:
            raise BadInput("--mode takes no ADDRESS and no --interface/--unmanaged/--vlan; "
                           "give --bridge BR (or --source-dev DEV for macvtap) and --mac")
        click.echo(hostdev_xml.to_string(netmodes.interface(mode, bridge, source_dev, mac)))
        return
    if address is None:
        raise BadInput("give the ADDRESS of a function, or --mode for an emulated NIC")
    discovery.require(obj.sysfs, address)
    if (mac or vlan) and not interface:
        raise BadInput("--mac and --vlan belong to the interface form; add --interface")
    element = (hostdev_xml.interface(address, not unmanaged, mac, vlan) if interface
               else hostdev_xml.hostdev(address, managed=not unmanaged))
    click.echo(hostdev_xml.to_string(element))


dry_run_option = click.option("--dry-run", is_flag=True,
                              help="Print the plan (the exact sysfs writes) and change nothing.")
force_option = click.option("--force", is_flag=True,
                            help="Go on although the host uses the function (network, storage).")


def _change(obj: Context, addresses: tuple[PciAddress, ...], propose: Callable[..., Any],
            dry_run: bool, report: Callable[[Any], str] | None = None) -> None:
    """Validate, plan, then act under the lock with journal and rollback (docs/plans.md)."""
    from pcimgr import discovery, hostdriver, hoststate, plan
    sysfs = obj.sysfs
    state = hostdriver.state_dir(sysfs, obj.state_dir)
    if dry_run:
        proposal = propose(discovery.scan_related(sysfs, addresses), hoststate.read(sysfs), state)
        if os.path.exists(plan.journal_path(state)):
            click.echo("Note: an unfinished transaction would be rolled back first.")
        click.echo(f"Plan for `pcimgr {proposal.plan.command}` (--dry-run: nothing changed):")
        if proposal.module:
            click.echo(f"0. modprobe {proposal.module}")
        click.echo(proposal.plan.describe())
        for note in proposal.notes:
            click.echo(f"({note})")
        return
    hostdriver.needs_root(sysfs)

    def work(recovered: str | None) -> None:
        if recovered:
            click.echo(f"pcimgr: {recovered}", err=True)
        proposal = propose(discovery.scan_related(sysfs, addresses), hoststate.read(sysfs), state)
        for note in proposal.notes:
            click.echo(note)
        if not proposal.plan.steps:
            click.echo("Nothing to do.")
            return
        hostdriver.execute(sysfs, state, proposal, _progress())
        if report is not None:
            click.echo(report(proposal))
            return
        from pcimgr import render
        moved = tuple(PciAddress.parse(s.address) for s in proposal.plan.steps)
        click.echo(render.moves(proposal.plan, discovery.scan_related(sysfs, moved)))

    hostdriver.locked(sysfs, state, obj.lock_timeout, work)


@cli.command()
@click.argument("addresses", nargs=-1, required=True, callback=_address, metavar="ADDR...")
@click.option("--driver", default="vfio-pci", show_default=True,
              help="The stub driver to bind (vfio-pci, or pci-stub).")
@click.option("--group", is_flag=True,
              help="Also detach the other functions of the IOMMU groups (all or none).")
@dry_run_option
@force_option
@click.pass_obj
def detach(obj: Context, addresses: tuple[PciAddress, ...], driver: str, group: bool,
           dry_run: bool, force: bool) -> None:
    """Take functions from their host drivers and bind them to vfio-pci, as one transaction."""
    from pcimgr import hostdriver
    hostdriver.check_driver_name(driver)
    _change(obj, addresses, lambda host, state, _: hostdriver.plan_detach(
        obj.sysfs, host, state, addresses, driver, group, force), dry_run)


@cli.command()
@click.argument("addresses", nargs=-1, required=True, callback=_address, metavar="ADDR...")
@dry_run_option
@click.pass_obj
def rebind(obj: Context, addresses: tuple[PciAddress, ...], dry_run: bool) -> None:
    """Give functions back to the driver they had before pcimgr moved them."""
    from pcimgr import hostdriver
    _change(obj, addresses, lambda host, _, state_dir: hostdriver.plan_rebind(
        obj.sysfs, host, addresses, hostdriver.load_records(state_dir, addresses)), dry_run)


@cli.command()
@click.argument("address", callback=_address)
@click.argument("driver")
@dry_run_option
@force_option
@click.pass_obj
def bind(obj: Context, address: PciAddress, driver: str, dry_run: bool, force: bool) -> None:
    """Bind one function to DRIVER (driver_override + unbind + drivers_probe)."""
    from pcimgr import hostdriver
    hostdriver.check_driver_name(driver)
    _change(obj, (address,), lambda host, state, _: hostdriver.plan_bind(
        obj.sysfs, host, state, address, driver, force), dry_run)


@cli.command()
@click.argument("address", callback=_address)
@dry_run_option
@force_option
@click.pass_obj
def unbind(obj: Context, address: PciAddress, dry_run: bool, force: bool) -> None:
    """Leave one function without a driver."""
    from pcimgr import hostdriver
    _change(obj, (address,), lambda host, state, _: hostdriver.plan_unbind(
        obj.sysfs, host, state, address, force), dry_run)


def _progress() -> Callable[[int, int, Any], None] | None:
    """Step by step on a terminal (VFs appearing and binding take seconds); silent on pipes."""
    if not sys.stderr.isatty() or not sys.stdout.isatty():
        return None

    def show(done: int, total: int, step: Any) -> None:
        click.echo(f"  [{done}/{total}] {step.summary()}", err=True)
    return show


@cli.command()
@click.argument("address", callback=_address)
@click.argument("vm")
@click.option("--live/--no-live", default=None,
              help="Hot-plug into the running guest [default: if it is running].")
@click.option("--config/--no-config", default=None,
              help="Add to the persistent configuration [default: if it has one].")
@click.option("--group", is_flag=True,
              help="Also detach the other functions of the IOMMU group (VFIO needs all).")
@click.option("--managed/--unmanaged", default=False,
              help="managed='yes' hands host binding to libvirt; by default pcimgr binds and "
                   "remembers the original driver (managed='no').")
@mac_option
@vlan_option
@dry_run_option
@force_option
@click.pass_obj
def assign(obj: Context, address: PciAddress, vm: str, live: bool | None, config: bool | None,
           group: bool, managed: bool, mac: str | None, vlan: int | None, dry_run: bool,
           force: bool) -> None:
    """Give a function to guest VM: detach it to vfio-pci, then attach it through libvirt.

    An SR-IOV VF of a NIC with --mac/--vlan goes in as <interface type='hostdev'>.
    """
    from pcimgr import assign as assigning

    def propose(host: Any, state: Any, _: str) -> Any:
        return assigning.plan_assign(obj.sysfs, host, state, obj.libvirt(), obj.holdings_or_fail(),
                                     address, vm, live, config, group, managed, mac, vlan, force)
    _change(obj, (address,), propose, dry_run)


@cli.command()
@click.argument("address", callback=_address)
@click.option("--keep-detached", is_flag=True,
              help="Leave the function (and its group mates) on vfio-pci.")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True,
              metavar="SECONDS", help="How long a running guest may take to release it.")
@dry_run_option
@click.pass_obj
def release(obj: Context, address: PciAddress, keep_detached: bool, timeout: float,
            dry_run: bool) -> None:
    """Take a function back from every guest that has it, then rebind its host driver."""
    from pcimgr import assign as assigning, hostdriver, statefile

    def propose(host: Any, _: Any, state_dir: str) -> Any:
        record = statefile.read(assigning.record_path(state_dir, str(address)))
        names = tuple(PciAddress.parse(a) for a in (record or {}).get("moved", []))
        return assigning.plan_release(
            obj.sysfs, host, obj.libvirt(), obj.holdings_or_fail(), address, record,
            hostdriver.load_records(state_dir, (address, *names)), keep_detached, timeout)
    _change(obj, (address,), propose, dry_run)


@cli.group()
def vfs() -> None:
    """SR-IOV virtual functions: list, create, destroy, and set MAC/VLAN/trust."""


timeout_option = click.option(
    "--timeout", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True,
    metavar="SECONDS", help="How long to wait for VFs to appear and bind (and for a VF in reset).")


@vfs.command("list")
@click.argument("pf", required=False, callback=_address)
@json_option
@click.pass_obj
def vfs_list(obj: Context, pf: PciAddress | None, as_json: bool) -> None:
    """SR-IOV capable PFs, their VF counts and each VF: driver, group, MAC, VLAN, holder."""
    from pcimgr import discovery, render, sriov
    host = discovery.scan_related(obj.sysfs, (pf,)) if pf else obj.host()
    views = sriov.survey(obj.sysfs, host, pf)
    if as_json:
        _emit_json([render.vfs_json(v, obj.namer, obj.holders) for v in views])
        return
    click.echo(render.vfs_text(views, obj.namer, obj.holders))
    if obj.holdings_problem:
        click.echo(obj.holdings_problem)


def _vfs_report(obj: Context, pf: PciAddress) -> Callable[[Any], str]:
    def report(_: Any) -> str:
        from pcimgr import discovery, render, sriov
        views = sriov.survey(obj.sysfs, discovery.scan_related(obj.sysfs, (pf,)), pf)
        return render.vfs_text(views, obj.namer)
    return report


@vfs.command("create")
@click.argument("pf", callback=_address)
@click.argument("count", type=click.IntRange(0, 0xFFFF))
@click.option("--driver", type=click.Choice(["vfio-pci", "host"]), default="vfio-pci",
              show_default=True,
              help="vfio-pci: for guests, no host driver ever touches the VFs; "
                   "host: leave them to the native VF driver (igbvf, iavf, ...).")
@click.option("--pf-up", is_flag=True, help="Bring the PF's interface up first (igb gives VFs "
                                            "of a PF that is down no carrier).")
@timeout_option
@dry_run_option
@force_option
@click.pass_obj
def vfs_create(obj: Context, pf: PciAddress, count: int, driver: str, pf_up: bool,
               timeout: float, dry_run: bool, force: bool) -> None:
    """Create COUNT VFs on PF (an existing other count goes through 0, in one transaction)."""
    from pcimgr import sriov
    _change(obj, (pf,), lambda host, state, _: sriov.plan_create(
        obj.sysfs, host, state, pf, count, driver, pf_up, timeout, force), dry_run,
        _vfs_report(obj, pf))


@vfs.command("destroy")
@click.argument("pf", callback=_address)
@timeout_option
@dry_run_option
@force_option
@click.pass_obj
def vfs_destroy(obj: Context, pf: PciAddress, timeout: float, dry_run: bool,
                force: bool) -> None:
    """Remove all VFs of PF; refused while a guest or process holds one."""
    from pcimgr import sriov
    _change(obj, (pf,), lambda host, state, _: sriov.plan_destroy(
        obj.sysfs, host, state, pf, timeout, force), dry_run, _vfs_report(obj, pf))


def _on_off(ctx: click.Context, param: click.Parameter, value: str | None) -> bool | None:
    return None if value is None else value == "on"


@vfs.command("set")
@click.argument("pf", callback=_address)
@click.argument("index", type=click.IntRange(0, 0xFFFF))
@mac_option
@click.option("--vlan", type=click.IntRange(0, 4095), help="Port VLAN id; 0 removes it.")
@click.option("--qos", type=click.IntRange(0, 7), help="802.1p priority of --vlan.")
@click.option("--trust", type=click.Choice(["on", "off"]), callback=_on_off,
              help="Let the guest change its MAC and use promiscuous mode.")
@click.option("--spoofchk", type=click.Choice(["on", "off"]), callback=_on_off,
              help="Drop frames the guest sends with another source MAC.")
@click.option("--state", "link_state", type=click.Choice(["auto", "enable", "disable"]),
              help="The VF's link: follow the PF, always up, or down.")
@timeout_option
@dry_run_option
@click.pass_obj
def vfs_set(obj: Context, pf: PciAddress, index: int, mac: str | None, vlan: int | None,
            qos: int | None, trust: bool | None, spoofchk: bool | None, link_state: str | None,
            timeout: float, dry_run: bool) -> None:
    """Set VF INDEX's MAC, VLAN, trust, spoof check or link state through the PF."""
    from pcimgr import sriov
    given = {"mac": mac, "vlan": vlan, "qos": qos, "trust": trust, "spoofchk": spoofchk,
             "link_state": link_state}
    settings = {k: v for k, v in given.items() if v is not None}
    _change(obj, (pf,), lambda host, _, __: sriov.plan_set(
        obj.sysfs, host, pf, index, settings, timeout), dry_run, _vfs_report(obj, pf))


# -- definitions, applied at boot --------------------------------------------------

def _needs_root_for_config(obj: Context) -> None:
    from pcimgr.errors import NeedsRoot
    if not obj.sysfs.simulated and os.geteuid() != 0 and not os.access(
            os.path.dirname(obj.config_dir.rstrip("/")) or "/", os.W_OK):
        raise NeedsRoot(f"definitions live in {obj.config_dir} and need root to change; run "
                        "it with sudo (or give --config-dir)")


@cli.command()
@click.argument("address", callback=_address)
@click.option("--driver", help="Bind this driver (e.g. vfio-pci) whenever the function appears.")
@click.option("--vfs", type=click.IntRange(1, 0xFFFF), help="A PF: create this many VFs.")
@click.option("--vf-driver", type=click.Choice(["vfio-pci", "host"]),
              help="The VFs' driver [default: vfio-pci].")
@click.option("--vf", "vf_index", type=click.IntRange(0, 0xFFFF), metavar="INDEX",
              help="Settings for one VF of the PF (with --mac, --vlan, --trust, --spoofchk).")
@mac_option
@click.option("--vlan", type=click.IntRange(0, 4095), help="The VF's port VLAN (0: none).")
@click.option("--qos", type=click.IntRange(0, 7), help="802.1p priority of --vlan.")
@click.option("--trust", type=click.Choice(["on", "off"]), callback=_on_off)
@click.option("--spoofchk", type=click.Choice(["on", "off"]), callback=_on_off)
@click.pass_obj
def define(obj: Context, address: PciAddress, driver: str | None, vfs: int | None,
           vf_driver: str | None, vf_index: int | None, mac: str | None, vlan: int | None,
           qos: int | None, trust: bool | None, spoofchk: bool | None) -> None:
    """Record what a function should be across reboots; `apply` (and udev) make it so."""
    from pcimgr import definitions, discovery, persist
    settings = {k: v for k, v in (("mac", mac), ("vlan", vlan), ("qos", qos), ("trust", trust),
                                  ("spoofchk", spoofchk)) if v is not None}
    if "qos" in settings and "vlan" not in settings:
        from pcimgr.errors import BadInput
        raise BadInput("--qos sets the priority of a VLAN; give --vlan with it")
    host = discovery.scan_related(obj.sysfs, (address,))
    cfg = obj.config_dir
    d = persist.define(host, definitions.load(cfg, str(address)), address, driver, vfs,
                       vf_driver, vf_index, settings)
    _needs_root_for_config(obj)
    definitions.save(cfg, d)
    click.echo(f"Defined {d.address} ({d.ids}, IOMMU group {d.iommu_group}): {d.describe()}")
    click.echo("`pcimgr apply` makes it so now; at boot the udev rules do "
               "(`pcimgr install-udev` once).")


@cli.command()
@click.argument("address", callback=_address)
@click.option("--vf", "vf_index", type=click.IntRange(0, 0xFFFF), metavar="INDEX",
              help="Drop only this VF's settings.")
@click.pass_obj
def undefine(obj: Context, address: PciAddress, vf_index: int | None) -> None:
    """Forget a definition (the function stays as it is now)."""
    from pcimgr import definitions, persist
    from pcimgr.errors import NotFound
    cfg = obj.config_dir
    d = definitions.load(cfg, str(address))
    if d is None:
        raise NotFound(f"{address} has no definition; `pcimgr status` lists the definitions")
    kept = persist.without_vf(d, vf_index)
    _needs_root_for_config(obj)
    if kept is None:
        definitions.remove(cfg, str(address))
        click.echo(f"Undefined {address}; it stays as it is now (`pcimgr rebind` gives it back)")
    else:
        definitions.save(cfg, kept)
        click.echo(f"{address}: {kept.describe()}")


@cli.command()
@click.option("--device", "device", callback=_address, metavar="ADDR",
              help="Only this function's definition (what the udev rules run).")
@timeout_option
@dry_run_option
@click.option("--quiet", is_flag=True, help="Print only changes and problems.")
@click.pass_obj
def apply(obj: Context, device: PciAddress | None, timeout: float, dry_run: bool,
          quiet: bool) -> None:
    """Make the host match the definitions, through the usual plans and refusals."""
    from pcimgr import definitions, discovery, hostdriver, hoststate, persist
    from pcimgr.errors import Mismatch
    sysfs = obj.sysfs
    chosen = persist.select(definitions.load_all(obj.config_dir), device)
    addresses = tuple(PciAddress.parse(d.address) for d in chosen)
    state = hostdriver.state_dir(sysfs, obj.state_dir)

    def propose() -> Any:
        host = discovery.scan_related(sysfs, addresses)
        return persist.plan_apply(sysfs, host, hoststate.read(sysfs), chosen, timeout)

    def report(planned: Any) -> None:
        for line in planned.skipped:
            click.echo(f"skipped {line}", err=True)
        for note in planned.proposal.notes:
            if not quiet or note.startswith("warning"):
                click.echo(note)

    if dry_run:
        planned = propose()
        report(planned)
        click.echo("Plan for `pcimgr apply` (--dry-run: nothing changed):")
        if planned.proposal.module:
            click.echo(f"0. modprobe {planned.proposal.module}")
        click.echo(planned.proposal.plan.describe())
        for d in planned.settings:
            click.echo(f"then VF settings of {d.address}: {d.describe()}")
        return
    hostdriver.needs_root(sysfs)

    def work(recovered: str | None) -> None:
        if recovered:
            click.echo(f"pcimgr: {recovered}", err=True)
        planned = propose()
        report(planned)
        if planned.proposal.plan.steps:
            hostdriver.execute(sysfs, state, planned.proposal, _progress())
            for step in planned.proposal.plan.steps:
                click.echo(step.summary())
        for d in planned.settings:
            host = discovery.scan_related(sysfs, (PciAddress.parse(d.address),))
            settings = persist.plan_vf_settings(sysfs, host, d, timeout)
            if settings.plan.steps:
                hostdriver.execute(sysfs, state, settings)
                for step in settings.plan.steps:
                    click.echo(step.summary())
        if planned.skipped:
            raise Mismatch(f"{len(planned.skipped)} definition(s) not applied (see above)")
        if not quiet and not planned.proposal.plan.steps:
            click.echo("The host matches the definitions." if chosen else "No definitions.")

    hostdriver.locked(sysfs, state, obj.lock_timeout, work)


@cli.command()
@json_option
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Compare the definitions with the host: what drifted (exit 10 if anything did)."""
    from pcimgr import definitions, discovery, persist
    from pcimgr.errors import Mismatch
    defs = definitions.load_all(obj.config_dir)
    host = discovery.scan_related(obj.sysfs, tuple(PciAddress.parse(d.address) for d in defs))
    findings = persist.status(obj.sysfs, host, defs)
    if as_json:
        _emit_json([{"address": f.definition.address, "ids": f.definition.ids,
                     "iommu_group": f.definition.iommu_group,
                     "defined": f.definition.describe(), "ok": f.ok, "drift": list(f.drift)}
                    for f in findings])
    elif not findings:
        click.echo(f"No definitions in {obj.config_dir} (`pcimgr define` adds one).")
    else:
        for f in findings:
            click.echo(f"{f.definition.address}  {f.definition.ids}  {f.definition.describe()}: "
                       + ("ok" if f.ok else "DRIFT"))
            for line in f.drift:
                click.echo(f"  - {line}")
    if any(not f.ok for f in findings):
        raise Mismatch(f"{sum(not f.ok for f in findings)} definition(s) drifted; "
                       "`pcimgr apply` puts back what it can")


@cli.command("install-udev")
@click.option("--prefix", default="/", show_default=True, type=click.Path(file_okay=False),
              help="Install below this directory (packaging, tests); / also reloads udev.")
@click.pass_obj
def install_udev(obj: Context, prefix: str) -> None:
    """Install the udev rules and the boot-time unit that apply the definitions."""
    import shutil
    from pcimgr import udev_files
    # the rules run this very program: the one the user ran, else the one on PATH
    ran = os.path.abspath(sys.argv[0])
    exe = ran if os.path.basename(ran) == "pcimgr" else (shutil.which("pcimgr") or ran)
    for path in udev_files.install(prefix, exe, obj.config_dir):
        click.echo(f"wrote {path}")


@cli.command()
@json_option
@click.pass_obj
def doctor(obj: Context, as_json: bool) -> None:
    """Can this host pass devices through? Each check with its fix (exit 10 if one fails)."""
    from pcimgr import doctor as doc
    from pcimgr.errors import Mismatch
    checks = doc.run(obj.sysfs, obj.host(), obj.asked_uri)
    possible = doc.passthrough_possible(checks)
    if as_json:
        _emit_json({"passthrough_possible": possible, "checks": [c.to_json() for c in checks]})
    else:
        for c in checks:
            click.echo(f"[{c.status.upper():4}] {c.name:<20} {c.detail}")
            if c.fix and c.status != "pass":
                click.echo(f"       {'':<20} fix: {c.fix}")
        click.echo("Passthrough can work on this host." if possible else
                   "Passthrough cannot work on this host until the failed checks are fixed.")
    if not possible:
        raise Mismatch("a check failed")


@cli.command()
@click.option("--guest-os", type=click.Choice(["linux", "windows"]), default="linux",
              show_default=True)
@click.option("--load", type=click.Choice(["low", "high"]), default="high", show_default=True,
              help="The guest's expected network load.")
@click.option("--bridge", default="br0", show_default=True, help="Host bridge for the XML.")
@click.option("--source-dev", metavar="DEV", help="Host NIC for macvtap XML.")
@json_option
@click.pass_obj
def advise(obj: Context, guest_os: str, load: str, bridge: str, source_dev: str | None,
           as_json: bool) -> None:
    """Which network mode suits a guest on this host, why, and the XML to use."""
    from pcimgr import doctor as doc, hoststate, netmodes, safety
    host = obj.host()
    checks = {c.name: c for c in doc.run(obj.sysfs, host, None)}
    holdings = obj.holdings() or {}
    free = [d for d in host.devices if d.base_class == 0x02 and not holdings.get(d.address)]
    vfs = sorted((d for d in free if d.physfn is not None), key=lambda d: d.driver != "vfio-pci")
    free_vf = str(vfs[0].address) if vfs else None
    state = hoststate.read(obj.sysfs)
    # a whole NIC: one already on vfio-pci, else one the host does not use
    nics = sorted((d for d in free if d.physfn is None and d.sriov is None),
                  key=lambda d: d.driver != "vfio-pci")
    free_nic = next((str(d.address) for d in nics if d.driver == "vfio-pci"
                     or not safety.concerns(obj.sysfs, host, [d], state)), None)
    abilities = netmodes.HostAbilities(
        vhost_net=checks["vhost-net"].status == "pass",
        passthrough=all(checks[n].status == "pass" for n in ("iommu", "interrupt-remapping",
                                                            "vfio")),
        free_vf=free_vf, free_nic=free_nic)
    advice = netmodes.advise(guest_os, load, abilities, bridge, source_dev)
    if as_json:
        _emit_json({"guest_os": guest_os, "load": load,
                    "recommendation": advice[0].to_json(),
                    "alternatives": [a.to_json() for a in advice[1:]]})
        return
    for n, a in enumerate(advice):
        click.echo(("Recommended: " if n == 0 else "Alternative: ") + a.mode)
        click.echo(f"  why: {a.why}")
        for note in a.notes:
            click.echo(f"  note: {note}")
        if a.xml:
            click.echo("  " + a.xml.replace("\n", "\n  "))
        click.echo("")


@cli.group()
def sim() -> None:
    """Simulated hosts: a directory laid out like /sys with a kernel that reacts to writes."""


@sim.command("create")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--profile", default="demo", show_default=True,
              help="demo, lab, or scale:PFSxVFS (e.g. scale:256x15).")
@click.option("--no-iommu", is_flag=True, help="A host booted without intel_iommu=on.")
def sim_create(directory: str, profile: str, no_iommu: bool) -> None:
    """Write a simulated host; use it with `pcimgr --sysfs-root DIRECTORY ...`."""
    from pcimgr.sim import builder, profiles
    spec = profiles.get(profile)
    builder.build(directory, spec, iommu=False if no_iommu else None)
    click.echo(f"Simulated host '{spec.name}' written to {os.path.abspath(directory)}")
    click.echo(f"Use it with: pcimgr --sysfs-root {os.path.abspath(directory)} list")


@sim.command("profiles")
@json_option
def sim_profiles(as_json: bool) -> None:
    """The built-in host profiles."""
    from pcimgr.sim import profiles
    entries = [{"name": name, "description": make().description}
               for name, make in profiles.PROFILES.items()]
    entries.append({"name": "scale:PFSxVFS",
                    "description": "PFS igb-like PFs with VFS VFs each, for benchmarks"})
    if as_json:
        _emit_json(entries)
        return
    for e in entries:
        click.echo(f"{e['name']:8} {e['description']}")


@cli.command()
@click.option("--keep", type=click.Path(file_okay=False),
              help="Build the simulated host here and keep it afterwards.")
def demo(keep: str | None) -> None:
    """A guided tour on a simulated host: no root, no hardware, no libvirtd."""
    from pcimgr import demo as demo_mod
    demo_mod.run(keep, lambda args: cli.main(args=args, prog_name="pcimgr",
                                             standalone_mode=False))


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="pcimgr")
    except BrokenPipeError:
        # `pcimgr list | head` is not an error; keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
