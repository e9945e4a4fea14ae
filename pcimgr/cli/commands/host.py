"""Before the first assign: doctor and advise."""

from __future__ import annotations

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import emit_json, json_option, terminal_columns
from pcimgr.core.terminal import safe

# What these print comes from the host's files (the command line, grub's files, module
# names) and, for advise, from options: a terminal escape in any of them is shown, not run.


@click.command()
@click.option("--fix", is_flag=True,
              help="Turn the IOMMU on in the kernel command line (through the host's "
                   "bootloader) and load vfio early, claiming functions defined onto "
                   "vfio-pci in the initramfs; then reboot (docs/boot.md).")
@click.option("--dry-run", is_flag=True,
              help="With --fix: print each file's diff and each command, change nothing.")
@json_option
@click.pass_obj
def doctor(obj: Context, fix: bool, dry_run: bool, as_json: bool) -> None:
    """Can this host pass devices through? Each check with its fix (exit 10 if one fails).
    With --fix, set up what the host's own files decide: the kernel command line and vfio
    early in boot."""
    from pcimgr.advice import doctor as doc
    from pcimgr.core.errors import BadInput, Mismatch
    if dry_run and not fix:
        raise BadInput("--dry-run goes with --fix: `pcimgr doctor --fix --dry-run`")
    if fix:
        if as_json:
            raise BadInput("--json does not go with --fix; drop one of them")
        _fix(obj, dry_run)
        return
    from pcimgr.handoff import checks as handoff_checks
    checks = doc.run(obj.machine, obj.host(), obj.asked_uri)
    checks[-2:-2] = handoff_checks.run(obj.machine, obj.config_dir)
    possible = doc.passthrough_possible(checks)
    if as_json:
        emit_json({"passthrough_possible": possible, "checks": [c.to_json() for c in checks]})
    else:
        columns = terminal_columns()
        for c in checks:
            click.echo(_wrapped(safe(f"[{c.status.upper():4}] {c.name:<20} {c.detail}"),
                                columns))
            if c.fix and c.status != "pass":
                click.echo(_wrapped(safe(f"       {'':<20} fix: {c.fix}"), columns))
        click.echo("Passthrough can work on this host." if possible else
                   "Passthrough cannot work on this host until the failed checks are fixed.")
    if not possible:
        raise Mismatch("a check failed")


def _wrapped(line: str, columns: int | None) -> str:
    """On a terminal, a check's line wrapped to its width under the detail column (a pipe
    keeps one line per check, for grep)."""
    if columns is None or len(line) <= columns:
        return line
    import textwrap
    return "\n".join(textwrap.wrap(line, max(columns, 40), subsequent_indent=" " * 28,
                                    break_on_hyphens=False))


def _fix(obj: Context, dry_run: bool) -> None:
    """doctor --fix: the plan, every refusal before the first write; then the writes under
    the host's lock and the regeneration commands."""
    import shlex

    from pcimgr.advice import bootloader, early_claim, edits, mdevctl_rule
    from pcimgr.cli.runner import run_locked_config
    from pcimgr.persist import definitions
    machine = obj.machine
    if not dry_run:
        machine.require_root("doctor --fix")
    found, _damaged = definitions.load_all(obj.config_dir)  # status names the damaged ones
    defined = sorted(d.address for d in found if d.driver == "vfio-pci")
    from pcimgr.handoff import checks as handoff_checks
    extra = tuple(handoff_checks.kernel_words(machine, obj.config_dir))
    parts = [bootloader.plan(machine, extra), early_claim.plan(machine, obj.config_dir, defined),
             mdevctl_rule.plan(machine)]
    for part in parts:
        for line in part.lines:
            click.echo(safe(line))
    changes = [e for p in parts for e in p.edits]
    # the initramfs first: kernel-install copies it into the boot entry it writes
    commands = [argv for p in reversed(parts) for argv in p.commands]
    if not changes and not commands:
        click.echo("Nothing to change: the kernel command line and vfio early in boot are set "
                   "up already.")
        return
    if dry_run:
        for e in changes:
            click.echo(safe(edits.diff(machine, e), lines=True), nl=False)
        for argv in commands:
            click.echo(safe(f"would run: {shlex.join(argv)}"))
        click.echo("(--dry-run: nothing written)")
        return
    run_locked_config(obj, lambda: edits.apply(machine, changes, commands,
                                               lambda line: click.echo(safe(line))))
    click.echo("Reboot for the changes to take effect: the kernel command line and the "
               "initramfs are read at boot.")


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
        click.echo(safe(("Recommended: " if n == 0 else "Alternative: ") + a.mode))
        click.echo(safe(f"  why: {a.why}"))
        for note in a.notes:
            click.echo(safe(f"  note: {note}"))
        if a.xml:
            click.echo(safe("  " + a.xml.replace("\n", "\n  "), lines=True))
        click.echo("")
