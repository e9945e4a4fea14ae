"""export: configurations for the engines that drive a fleet (docs/fleet.md)."""

from __future__ import annotations

from collections.abc import Callable

import click

from pcimgr.cli.context import Context


def _name(kind: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A callback checking the option's value as its target reads it (core/fleetnames.py)."""
    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        from pcimgr.core import fleetnames
        return None if value is None else fleetnames.check(kind, param.opts[0], value)
    return check


@click.command()
@click.argument("fmt", metavar="FORMAT", type=click.Choice(
    ["facts", "inventory", "sriov-device-plugin", "kubevirt", "proxmox", "nova"]))
@click.option("--facts", "facts_files", multiple=True, metavar="FILE",
              help="Read hosts' facts (`pcimgr export facts`, ansible_facts.pcimgr) instead "
                   "of this host; repeat for a fleet.")
@click.option("--host-name", metavar="NAME", callback=_name("host"),
              help="This host's name in facts and Proxmox maps [default: its hostname].")
@click.option("--resource-prefix", default="intel.com", show_default=True, metavar="PREFIX",
              help="sriov-device-plugin, kubevirt: the resources' prefix (PREFIX/NAME).")
@click.option("--configmap", is_flag=True,
              help="sriov-device-plugin: the ConfigMap YAML instead of config.json.")
@click.option("--configmap-name", default="sriovdp-config", show_default=True, metavar="NAME",
              callback=_name("dns-subdomain"),
              help="With --configmap: its name (the plugin's DaemonSet mounts it).")
@click.option("--namespace", default="kube-system", show_default=True, metavar="NS",
              callback=_name("dns-label"),
              help="With --configmap: its namespace.")
@click.option("--kubevirt-allocates", is_flag=True,
              help="kubevirt: KubeVirt's own plugin hands the devices out (by vendor:device), "
                   "not the SR-IOV device plugin.")
@click.option("--physnet", metavar="NAME", callback=_name("physnet"),
              help="nova: physical_network tag of the NIC functions (Neutron SR-IOV ports).")
@click.option("--json", "as_json", is_flag=True, help="proxmox, nova: the entries as JSON.")
@click.pass_obj
def export(obj: Context, fmt: str, facts_files: tuple[str, ...], host_name: str | None,
           resource_prefix: str, configmap: bool, configmap_name: str, namespace: str,
           kubevirt_allocates: bool, physnet: str | None, as_json: bool) -> None:
    """Print FORMAT for this host, or with --facts for many: facts, inventory (list --json
    of every host), sriov-device-plugin (config.json), kubevirt (permittedHostDevices),
    proxmox (pvesh resource mappings), nova ([pci] device_spec and alias).

    The pools are the functions pcimgr manages: defined, and as defined now."""
    from pcimgr.core.errors import BadInput
    from pcimgr.fleet import exports, facts
    options = exports.Options(resource_prefix, configmap, configmap_name, namespace, physnet,
                              kubevirt_allocates, as_json)
    if facts_files and host_name:
        raise BadInput("--host-name names this host, and --facts reads other hosts' facts "
                       "(which carry their names); give one of them")
    exports.check(fmt, max(len(facts_files), 1), options)
    fleet = ([facts.load(p) for p in facts_files] if facts_files
             else [facts.gather(obj.machine, obj.config_dir, obj.namer, host_name)])
    text, notices = exports.render(fmt, fleet, options)
    for notice in notices:
        click.echo(f"pcimgr: {notice}", err=True)
    click.echo(text, nl=False)
