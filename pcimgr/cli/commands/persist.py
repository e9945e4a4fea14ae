"""Across reboots: define, undefine, apply, status, install-udev."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import (
    ADDRESS,
    DRIVER,
    Digits,
    dry_run_option,
    emit_json,
    json_option,
    mac_option,
    on_off,
    timeout_option,
)
from pcimgr.cli.runner import (
    mention_unfinished,
    run_locked,
    run_locked_config,
)
from pcimgr.core.address import PciAddress
from pcimgr.core.terminal import safe

# -- definitions, applied at boot --------------------------------------------------

def _vgpu_name(obj: Context, host: Any, pf: PciAddress, index: int,
               type_id: int) -> dict[str, str]:
    """The type's name from the VF's catalog while it lists it (the exports name resources by
    it); nothing when the VF is not there yet or lists it no more."""
    from pcimgr.host import vgpus
    device = host.get(pf)
    vfs = device.sriov.vfs if device is not None and device.sriov else ()
    now = vgpus.read(obj.sysfs, str(vfs[index])) if index < len(vfs) else None
    name = next((t.name for t in now.creatable if t.id == type_id), None) if now else None
    return {"vgpu_name": name} if name else {}


@click.command()
@click.argument("address", type=ADDRESS)
@click.option("--driver", type=DRIVER,
              help="Bind this driver (e.g. vfio-pci) whenever the function appears.")
@click.option("--vfs", type=Digits(1, 0xFFFF), help="A PF: create this many VFs.")
@click.option("--vf-driver", type=click.Choice(["vfio-pci", "host"]),
              help="The VFs' driver [default: vfio-pci].")
@click.option("--vf", "vf_index", type=Digits(0, 0xFFFF), metavar="INDEX",
              help="Settings for one VF of the PF (with --mac, --vlan, --trust, --spoofchk).")
@mac_option
@click.option("--vlan", type=Digits(0, 4094), help="The VF's port VLAN, 1-4094 (0: none).")
@click.option("--qos", type=Digits(0, 7), help="802.1p priority of --vlan.")
@click.option("--trust", type=click.Choice(["on", "off"]), callback=on_off)
@click.option("--spoofchk", type=click.Choice(["on", "off"]), callback=on_off)
@click.option("--vgpu-type", type=Digits(1, 2**31 - 1), metavar="ID",
              help="With --vf: the VF's vGPU type (NVIDIA's vendor interface; `pcimgr vgpu "
                   "list`), set at every apply.")
@click.option("--group", is_flag=True,
              help="With --driver vfio-pci: define the other functions of the IOMMU group too.")
@click.option("--owner", metavar="USER[:GROUP]",
              help="With a VFIO --driver: its VFIO device nodes go to USER (and GROUP) at "
                   "every apply, as `detach --owner` does.")
@timeout_option
@dry_run_option
@click.pass_obj
def define(obj: Context, address: PciAddress, driver: str | None, vfs: int | None,
           vf_driver: str | None, vf_index: int | None, mac: str | None, vlan: int | None,
           qos: int | None, trust: bool | None, spoofchk: bool | None, vgpu_type: int | None,
           group: bool, owner: str | None, timeout: float, dry_run: bool) -> None:
    """Record what a function should be across reboots; `apply` (and udev) make it so.

    The same checks as the change itself run first (the host's use of the function, the
    IOMMU group, the driver's existence): a definition is applied at every boot."""
    from pcimgr.cli import defining
    from pcimgr.host import discovery, vfinfo
    settings = {k: v for k, v in (("mac", mac), ("vlan", vlan), ("qos", qos), ("trust", trust),
                                  ("spoofchk", spoofchk), ("vgpu_type", vgpu_type))
                if v is not None}
    if vfinfo.qos_without_vlan(settings):
        from pcimgr.core.errors import BadInput
        raise BadInput("--qos sets the priority of a VLAN; give --vlan with it")
    host = discovery.scan_related(obj.sysfs, (address,))
    if vgpu_type is not None and vf_index is not None:
        settings |= _vgpu_name(obj, host, address, vf_index, vgpu_type)

    def checked() -> list[Any]:
        return defining.checked(obj, host, (address,), driver, group, timeout, vfs, vf_driver,
                                vf_index, settings, owner)

    if dry_run:
        defining.would_define(obj, checked())
        click.echo("(--dry-run: nothing written)")
        return
    defining.needs_root_for_config(obj)

    def work() -> None:  # read, check, merge and write under the lock: no define loses another's
        defining.write(obj, checked())
    run_locked_config(obj, work, check=checked)
    click.echo("`pcimgr apply` makes it so now; at boot the udev rules do "
               "(`pcimgr install-udev` once).")


@click.command()
@click.argument("address", type=ADDRESS)
@click.option("--vf", "vf_index", type=Digits(0, 0xFFFF), metavar="INDEX",
              help="Drop only this VF's settings.")
@click.option("--group", is_flag=True,
              help="Also forget the definitions of its IOMMU group's other functions (a "
                   "group defined with `define --group` is applied whole or not at all).")
@dry_run_option
@click.pass_obj
def undefine(obj: Context, address: PciAddress, vf_index: int | None, group: bool,
             dry_run: bool) -> None:
    """Forget a definition (the function stays as it is now); with --group, its group's."""
    from pcimgr.core.errors import Damaged, NotFound
    from pcimgr.persist import definitions
    from pcimgr.persist import planner as persist
    cfg = obj.config_dir

    def mates_of(d: Any) -> list[Any]:
        """The group's other VFIO definitions; refused without --group (never half)."""
        from pcimgr.core.errors import Refused
        mates = definitions.group_mates(definitions.load_all(cfg)[0], d)
        if mates and not group and vf_index is None:
            raise Refused(f"refusing: {address} shares IOMMU group {d.iommu_group} with "
                          + ", ".join(m.address for m in mates) + f", defined onto "
                          f"{d.driver} with it, and a group is applied whole or not at all; "
                          f"undefine them together: `pcimgr undefine {address} --group`")
        return mates if group and vf_index is None else []

    if dry_run:
        d = definitions.load(cfg, str(address))
        if d is None:
            raise NotFound(f"{address} has no definition; `pcimgr status` lists the definitions")
        kept = persist.without_vf(d, vf_index)
        for m in mates_of(d):
            click.echo(f"Would remove {definitions.path(cfg, m.address)} and its udev env file")
        click.echo(f"Would remove {definitions.path(cfg, str(address))} and its udev env file"
                   if kept is None else f"Would keep {address}: {kept.describe()}")
        click.echo("(--dry-run: nothing written)")
        return
    from pcimgr.cli import defining
    defining.needs_root_for_config(obj)

    def work() -> None:
        try:
            d = definitions.load(cfg, str(address))
        except Damaged:
            if vf_index is not None:
                raise  # nothing to keep from a file that does not read
            d = None
            damaged = True
        else:
            damaged = False
            if d is None:
                raise NotFound(f"{address} has no definition; `pcimgr status` lists the "
                               "definitions")
        kept = None if d is None else persist.without_vf(d, vf_index)
        mates = [] if d is None else mates_of(d)
        if kept is None:
            definitions.remove_all(cfg, [str(address), *(m.address for m in mates)])
            for a in [str(address), *(m.address for m in mates)]:
                click.echo(f"Undefined {a}" + (" (its file was damaged)" if damaged else "")
                           + "; it stays as it is now (`pcimgr rebind` gives it back)")
        else:
            definitions.save(cfg, kept)
            click.echo(f"{address}: {kept.describe()}")

    def check() -> None:  # the group refusal before the lock: a refused run makes no file
        try:
            d = definitions.load(cfg, str(address))
        except Damaged:
            return
        if d is not None:
            mates_of(d)
    run_locked_config(obj, work, check=check)


@click.command()
@click.option("--device", "device", type=ADDRESS, metavar="ADDR",
              help="Only this function's definition (what the udev rules run).")
@timeout_option
@dry_run_option
@click.option("--quiet", is_flag=True, help="Print only changes and problems.")
@click.pass_obj
def apply(obj: Context, device: PciAddress | None, timeout: float, dry_run: bool,
          quiet: bool) -> None:
    """Make the host match the definitions, through the usual plans and refusals.

    With --device, runs started together (udev's, at boot) combine: the one that gets the
    lock applies every request, and the others report what it did for theirs."""
    from pcimgr.cli import applying
    if device is not None and not dry_run:  # imports no plans: it may only wait
        applying.device(obj, device, timeout, quiet)
        return
    from pcimgr.persist import definitions
    from pcimgr.persist import planner as persist
    found, damaged = definitions.load_all(obj.config_dir)
    if device is not None:  # a damaged definition of this very device is the answer
        definitions.load(obj.config_dir, str(device))
        damaged = []
    chosen = persist.select(found, device)
    if dry_run:
        applying.dry_run(obj, chosen, damaged, timeout, quiet)
        return

    def work() -> None:
        if device is None:  # the boot's whole apply: hand-offs of the boot before end here
            from pcimgr.cli.commands.handoff import settle_orphans
            for line in settle_orphans(obj):
                click.echo(safe(f"pcimgr: {line}"), err=True)
        applying.run(obj, chosen, damaged, applying.Report(True, quiet), timeout,
                     mdevs=device is None)

    run_locked(obj, obj.state, work)


@click.command()
@json_option
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Compare the definitions with the host: what drifted (exit 10 if anything did)."""
    from pcimgr.core.errors import Mismatch
    from pcimgr.host import discovery, usage
    from pcimgr.persist import definitions
    from pcimgr.persist import planner as persist
    defs, damaged = definitions.load_all(obj.config_dir)
    host = discovery.scan_related(obj.sysfs, tuple(PciAddress.parse(d.address) for d in defs))
    findings = persist.status(obj.machine, host, usage.survey(obj.machine, deep=False), defs)
    mention_unfinished(obj)
    mdev_drift = _mdev_drift(obj)
    if as_json:
        emit_json([{"address": f.definition.address, "ids": f.definition.ids,
                     "iommu_group": f.definition.iommu_group,
                     "defined": f.definition.describe(), "ok": f.ok, "drift": list(f.drift)}
                    for f in findings])
    elif not findings and not damaged and not mdev_drift:
        click.echo(f"No definitions in {obj.config_dir} (`pcimgr define` adds one).")
    else:
        for f in findings:
            click.echo(safe(f"{f.definition.address}  {f.definition.ids}  "
                            f"{f.definition.describe()}: " + ("ok" if f.ok else "DRIFT")))
            for line in f.drift:
                click.echo(safe(f"  - {line}"))
        for title, drift in mdev_drift:
            click.echo(safe(f"{title}: " + ("DRIFT" if drift else "ok")))
            if drift:
                click.echo(safe(f"  - {drift}"))
    for e in damaged:
        click.echo(safe(f"DAMAGED: {e}"), err=as_json)  # not in the JSON document (docs/json.md)
    definitions.raise_damaged(damaged)
    drifted = sum(not f.ok for f in findings)
    mdevs_drifted = sum(bool(d) for _, d in mdev_drift)
    if drifted or mdevs_drifted:
        raise Mismatch(f"{drifted + mdevs_drifted} definition(s) drifted; "
                       + (f"`pcimgr apply` puts back what it can{'; ' if mdevs_drifted else ''}"
                          if drifted else "")
                       + ("`pcimgr mdev start UUID` starts an mdev" if mdevs_drifted else ""))


def _mdev_drift(obj: Context) -> list[tuple[str, str]]:
    """mdevctl's definitions (docs/mdev.md): an auto one not running, one running as another
    parent or type, or one whose parent is not there is drift; a manual one stopped is not.
    Its damaged files are warned about; `mdev list --defined --json` has the states."""
    from pcimgr.cli import mdev_render
    from pcimgr.host import mdevs
    from pcimgr.mdev import definitions as mdev_definitions
    found = mdev_definitions.load_all(obj.machine)
    for problem in found.problems:
        click.echo(safe(f"pcimgr: warning: {problem}"), err=True)
    live = mdevs.mdevs(obj.sysfs) if found.definitions else []
    result = []
    for row in mdev_render.defined_rows(found.definitions, live, obj.sysfs):
        state = row["state"]
        drift = {"running": "", "parent absent": f"its parent {row['parent']} is not there",
                 "stopped": "" if row["start"] == "manual" else
                 "not running, although it starts with its parent (start auto)"}.get(state,
                                                                                    state)
        result.append((f"mdev {row['uuid']}  {row['parent']} {row['type']} (start "
                       f"{row['start']})", drift))
    return result


@click.command("install-udev")
@click.option("--prefix", type=click.Path(file_okay=False),
              help="Install below this directory (packaging, tests) [default: /, which also "
                   "reloads udev; on a simulated host its own directory, never the real /etc].")
@dry_run_option
@click.pass_obj
def install_udev(obj: Context, prefix: str | None, dry_run: bool) -> None:
    """Install the udev rules and the boot-time unit that apply the definitions."""
    import shutil

    from pcimgr.core.errors import BadInput
    from pcimgr.persist import udev
    root = obj.machine.system_root
    prefix = os.path.abspath(prefix or root)
    if os.path.commonpath([prefix, root]) != root:
        raise BadInput(f"{root} is {obj.machine.kind}: its udev files go below it, not to "
                       f"{prefix}; drop --prefix or give one inside it")
    # the rules run this very program: the one the user ran, else the one on PATH
    ran = os.path.abspath(sys.argv[0])
    exe = ran if os.path.basename(ran) == "pcimgr" else (shutil.which("pcimgr") or ran)
    if dry_run:
        for rel, text in udev.files(exe, obj.config_dir):
            click.echo(f"would write {os.path.join(prefix, rel)}:")
            click.echo("  " + text.rstrip("\n").replace("\n", "\n  "))
        if prefix == "/":
            click.echo("then: udevadm control --reload; systemctl daemon-reload; "
                       f"systemctl enable {udev.UNIT_NAME}")
        click.echo("(--dry-run: nothing written)")
        return
    from pcimgr.persist import install as installing
    below = os.path.relpath(prefix, root)
    files = [(os.path.normpath(os.path.join(below, rel)), text)
             for rel, text in udev.files(exe, obj.config_dir)]

    def install() -> None:
        installing.install(root, files, click.echo)
        if prefix == "/":
            installing.reload()
    run_locked_config(obj, install)
