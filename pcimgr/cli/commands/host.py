"""Before the first assign: doctor and advise."""

from __future__ import annotations

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import emit_json, json_option


@click.command()
@json_option
@click.pass_obj
def doctor(obj: Context, as_json: bool) -> None:
    """Can this host pass devices through? Each check with its fix (exit 10 if one fails)."""
    from pcimgr.advice import doctor as doc
    from pcimgr.core.errors import Mismatch
    checks = doc.run(obj.machine, obj.host(), obj.asked_uri)
    possible = doc.passthrough_possible(checks)
    if as_json:
        emit_json({"passthrough_possible": possible, "checks": [c.to_json() for c in checks]})
    else:
        for c in checks:
            click.echo(f"[{c.status.upper():4}] {c.name:<20} {c.detail}")
            if c.fix and c.status != "pass":
                click.echo(f"       {'':<20} fix: {c.fix}")
        click.echo("Passthrough can work on this host." if possible else
                   "Passthrough cannot work on this host until the failed checks are fixed.")
    if not possible:
        raise Mismatch("a check failed")


@click.command()
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
    from pcimgr.advice import doctor as doc
    from pcimgr.advice import netmodes
    from pcimgr.drivers import safety
    from pcimgr.host import usage
    host = obj.host()
    checks = {c.name: c for c in doc.run(obj.machine, host, None)}
    holdings = obj.holdings() or {}
    free = [d for d in host.devices if d.base_class == 0x02 and not holdings.get(d.address)]
    vfs = sorted((d for d in free if d.physfn is not None), key=lambda d: d.driver != "vfio-pci")
    free_vf = str(vfs[0].address) if vfs else None
    survey = usage.survey(obj.machine, deep=False)
    # a whole NIC: one already on vfio-pci, else one the host does not use
    nics = sorted((d for d in free if d.physfn is None and d.sriov is None),
                  key=lambda d: d.driver != "vfio-pci")
    free_nic = next((str(d.address) for d in nics if d.driver == "vfio-pci"
                     or not safety.concerns(obj.sysfs, host, [d], survey)), None)
    abilities = netmodes.HostAbilities(
        vhost_net=checks["vhost-net"].status == "pass",
        passthrough=all(checks[n].status == "pass" for n in ("iommu", "interrupt-remapping",
                                                            "vfio")),
        free_vf=free_vf, free_nic=free_nic)
    advice = netmodes.advise(guest_os, load, abilities, bridge, source_dev)
    if as_json:
        emit_json({"guest_os": guest_os, "load": load,
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
