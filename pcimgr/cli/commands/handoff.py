"""Per-guest hand-off: the `handoff` command group (profiles; prepare and release by hand)
and the `hook` group (the libvirt hook that runs them; docs/handoff.md)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from pcimgr.cli.context import Context
from pcimgr.cli.options import (
    ADDRESS,
    DOMAIN,
    DRIVER,
    dry_run_option,
    emit_json,
    flat_addresses,
    json_option,
)
from pcimgr.cli.runner import change, mention_unfinished, run_locked, run_locked_config
from pcimgr.core.address import PciAddress
from pcimgr.core.terminal import safe

if TYPE_CHECKING:
    from pcimgr.core.handoff import Profile
    from pcimgr.handoff.planner import Held


def _vm(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from pcimgr.core.handoff import check_vm
    return None if value is None else check_vm(value)


ISO = "%Y-%m-%dT%H:%M:%S%z"  # as history prints times
vm_argument = click.argument("vm", metavar="GUEST", type=DOMAIN, callback=_vm)


@click.group()
def handoff() -> None:
    """Give devices to a guest when libvirt starts it and back when it stops (with `pcimgr
    hook install`): profiles, and prepare/release by hand."""


@handoff.command("define")
@vm_argument
@click.argument("addresses", nargs=-1, required=True, type=ADDRESS, metavar="ADDR...",
                callback=flat_addresses)
@click.option("--group", is_flag=True, help="Also take the other functions of their IOMMU "
                                            "groups (all or none).")
@click.option("--stop-display-manager", "display_manager", is_flag=False,
              flag_value="display-manager.service", default=None, metavar="[UNIT]",
              help="Stop the display manager (default display-manager.service) while the "
                   "guest runs: a single-GPU host's desktop holds the GPU.")
@click.option("--framebuffer", is_flag=True,
              help="Take the console and boot framebuffer on these functions (fbcon's vtcon, "
                   "efifb/vesafb/simplefb) while the guest runs: the single-GPU case.")
@click.option("--hugepages", "hugepages", metavar="N[,SIZE]",
              help="Reserve N hugepages (SIZE 2M or 1G; default 2M) before the guest starts, "
                   "released after it stops.")
@click.option("--isolate-cpus", metavar="LIST",
              help="Keep the host's slices (system, user, init) off these CPUs while the "
                   "guest runs (systemctl set-property --runtime AllowedCPUs).")
@click.option("--driver", type=DRIVER,
              help="The VFIO driver to bind (default: the most specific variant the kernel "
                   "offers, else vfio-pci).")
@click.option("--unload-driver", is_flag=True,
              help="Also `modprobe -r` the host driver once its functions left it, and load it "
                   "again after (for drivers that hold on to a GPU otherwise).")
@click.option("--force", is_flag=True,
              help="Take them although the host uses them for more than its console "
                   "(network, storage).")
@dry_run_option
@click.pass_obj
def handoff_define(obj: Context, vm: str, addresses: tuple[PciAddress, ...], group: bool,
                   display_manager: str | None, framebuffer: bool, hugepages: str | None,
                   isolate_cpus: str | None, driver: str | None, unload_driver: bool,
                   force: bool, dry_run: bool) -> None:
    """Define GUEST's hand-off: what pcimgr takes from the host when libvirt prepares GUEST
    (checked now, as it will be then) and gives back when libvirt releases it."""
    from pcimgr.core import handoff as model
    from pcimgr.core.errors import BadInput
    from pcimgr.handoff import profiles
    if display_manager is not None:
        model.check_unit(display_manager)
    profile = model.Profile(
        vm, tuple(str(a) for a in addresses), group, display_manager, framebuffer,
        model.parse_hugepages(hugepages) if hugepages else None,
        model.format_cpus(model.parse_cpus(isolate_cpus)) if isolate_cpus else None,
        driver, unload_driver, force)

    def check() -> None:
        _refuse_held(obj, vm, "redefine")
        for a in profile.addresses:
            other = profiles.owner_of(obj.config_dir, a, vm)
            if other is not None:
                raise BadInput(f"{a} is in {other}'s hand-off already; a function goes to one "
                               f"guest (`pcimgr handoff undefine {other}` first)")
        _plan_text(obj, profile)  # the preflight's refusals, now rather than at start
    check()
    click.echo(f"When libvirt prepares {vm}, pcimgr takes (as the host is now):")
    _lines(_plan_text(obj, profile).splitlines())
    if dry_run:
        click.echo(f"(--dry-run: the profile {profiles.path(obj.config_dir, vm)} is not "
                   "written)")
        return

    def save() -> None:
        profiles.save(obj.config_dir, profile)
        click.echo(f"Defined the hand-off of {vm} ({profiles.path(obj.config_dir, vm)}).")
        if not _hook_installed(obj):
            click.echo("pcimgr: note: libvirt runs it once the hook is installed: `pcimgr hook "
                       "install`, then restart libvirtd", err=True)
    run_locked_config(obj, save, check)


def _plan_text(obj: Context, profile: Profile) -> str:
    proposal = _proposal(obj, profile)
    return "\n".join([proposal.plan.describe()] + [f"({n})" for n in proposal.notes])


def _hook_installed(obj: Context) -> bool:
    from pcimgr.handoff import hookfile
    return hookfile.is_ours(obj.machine.read_system_file(hookfile.REL))


@handoff.command("undefine")
@vm_argument
@click.pass_obj
def handoff_undefine(obj: Context, vm: str) -> None:
    """Remove GUEST's hand-off profile (not while it holds its devices)."""
    from pcimgr.handoff import profiles

    def check() -> None:
        profiles.require(obj.config_dir, vm)
        _refuse_held(obj, vm, "undefine")

    def work() -> None:
        check()
        profiles.remove(obj.config_dir, vm)
        click.echo(f"Removed the hand-off of {vm}.")
    run_locked_config(obj, work, check)


def _refuse_held(obj: Context, vm: str, what: str) -> None:
    """A profile changes only while its guest holds nothing: the release is checked against
    the profile it took by."""
    from pcimgr.core.errors import Refused
    found = _held(obj, vm)
    if found is not None and not found.stale:
        raise Refused(f"refusing to {what} {vm}'s hand-off: {vm} holds it now; stop {vm} "
                      f"first (its release gives the devices back), or `pcimgr handoff "
                      f"release {vm}`")


def _held(obj: Context, vm: str) -> Held | None:
    from pcimgr.handoff import planner
    return planner.held(obj.machine, obj.state_path, vm)


@handoff.command("list")
@json_option
@click.pass_obj
def handoff_list(obj: Context, as_json: bool) -> None:
    """The hand-off profiles, and which guests hold theirs now."""
    from pcimgr.handoff import profiles
    mention_unfinished(obj)
    rows = [_profile_json(p, _held(obj, p.vm)) for p in profiles.load_all(obj.config_dir)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("No hand-off profiles (`pcimgr handoff define GUEST ADDR...`).")
        return
    from pcimgr.cli.render import table
    click.echo(table([[safe(r["vm"]), ", ".join(r["addresses"]) + (" +group" if r["group"]
                                                                   else ""),
                       safe(_takes(r)), _state(r)] for r in rows],
                     ["GUEST", "FUNCTIONS", "ALSO TAKES", "STATE"]))
    if not _hook_installed(obj):
        click.echo("pcimgr: note: the libvirt hook is not installed (`pcimgr hook install`)",
                   err=True)


def _takes(row: dict[str, Any]) -> str:
    from pcimgr.core.handoff import size_name
    parts = []
    if row["display_manager"]:
        parts.append(row["display_manager"])
    if row["framebuffer"]:
        parts.append("console")
    if row["hugepages"]:
        parts.append(f"{row['hugepages']['pages']}x{size_name(row['hugepages']['size_kb'])} "
                     "pages")
    if row["isolate_cpus"]:
        parts.append(f"CPUs {row['isolate_cpus']}")
    if row["unload_driver"]:
        parts.append("host module")
    return ", ".join(parts) or "-"


def _state(row: dict[str, Any]) -> str:
    if row["held_since"] is None:
        return "idle"
    when = time.strftime(ISO, time.localtime(row["held_since"]))
    return f"held since {when}" + (" (earlier boot)" if row["stale"] else "")


def _profile_json(p: Profile, found: Held | None) -> dict[str, Any]:
    data = p.to_json()
    del data["format"]
    return data | {"held_since": found.taken if found else None,
                   "stale": bool(found and found.stale),
                   "held_steps": len(found.steps) if found else 0}


@handoff.command("show")
@vm_argument
@json_option
@click.pass_obj
def handoff_show(obj: Context, vm: str, as_json: bool) -> None:
    """GUEST's profile, and what prepare would take now (or, while GUEST holds it, what
    release gives back)."""
    from pcimgr.core.errors import Refused
    from pcimgr.handoff import planner, profiles
    mention_unfinished(obj)
    profile = profiles.require(obj.config_dir, vm)
    found = _held(obj, vm)
    if as_json:
        data = _profile_json(profile, found)
        if found is not None:
            data["steps"] = [s.summary() for s in found.steps]
        else:
            try:
                data["steps"] = [s.summary() for s in _proposal(obj, profile).plan.steps]
                data["refused"] = None
            except Refused as e:
                data["steps"], data["refused"] = [], str(e)
        emit_json(data)
        return
    _lines([f"Hand-off of {vm}:"] + [f"  {line}" for line in profile.describe()])
    if found is not None:
        click.echo(f"Held since {time.strftime(ISO, time.localtime(found.taken))}"
                   + ("; recorded in an earlier boot" if found.stale else "")
                   + ". Release gives back:")
        _lines(planner.undo_lines(found))
        return
    try:
        text = _plan_text(obj, profile)
    except Refused as e:
        _lines([f"Prepare would refuse now: {e}"])
        return
    click.echo("Prepare takes (as the host is now):")
    _lines(text.splitlines())


def _lines(lines: list[str]) -> None:
    """Each line made safe for the terminal on its own (safe() shows a newline escaped)."""
    click.echo("".join(f"{safe(line)}\n" for line in lines), nl=False)


def _proposal(obj: Context, profile: Profile) -> Any:
    from pcimgr.handoff import planner
    from pcimgr.host import discovery, usage
    addresses = tuple(PciAddress.parse(a) for a in profile.addresses)
    return planner.plan_take(obj.machine, discovery.scan_related(obj.sysfs, addresses),
                             usage.survey(obj.machine), profile, None, obj.state_path)


@handoff.command("prepare")
@vm_argument
@dry_run_option
@click.pass_obj
def handoff_prepare(obj: Context, vm: str, dry_run: bool) -> None:
    """Take GUEST's devices now, as the hook does when libvirt prepares it."""
    prepare(obj, vm, None, dry_run)


@handoff.command("release")
@vm_argument
@dry_run_option
@click.pass_obj
def handoff_release(obj: Context, vm: str, dry_run: bool) -> None:
    """Give back what GUEST's hand-off took, as the hook does when libvirt releases it."""
    release(obj, vm, dry_run)


def prepare(obj: Context, vm: str, uuid: str | None, dry_run: bool) -> None:
    from pcimgr.handoff import planner, profiles
    from pcimgr.plans.runner import Proposal
    from pcimgr.plans.transaction import Plan
    profile = profiles.require(obj.config_dir, vm)
    addresses = tuple(PciAddress.parse(a) for a in profile.addresses)

    def propose(host: Any, survey: Any, state: str) -> Any:
        # asked again under the lock: a second prepare must not record over the first's steps
        found = planner.held(obj.machine, state, vm)
        if found is not None and not found.stale:
            since = time.strftime("%H:%M:%S", time.localtime(found.taken))
            return Proposal(Plan(f"handoff prepare {vm}", ()), None,
                            (f"{vm} holds its hand-off already (since {since})",))
        return planner.plan_take(obj.machine, host, survey, profile, uuid, state)
    change(obj, addresses, propose, dry_run,
           lambda proposal: f"Handed {', '.join(profile.addresses)} to {vm} "
                            f"({len(proposal.plan.steps)} step(s)).")


def release(obj: Context, vm: str, dry_run: bool) -> None:
    """Under the lock even with nothing recorded: libvirt releases a guest whose prepare was
    killed, and the lock's recovery undoes that prepare's journal first."""
    from pcimgr.handoff import planner
    found = _held(obj, vm)
    if dry_run and found is None:
        click.echo(f"{vm} holds no hand-off; nothing to give back.")
        return
    if dry_run and found is not None:
        click.echo(f"Plan for `pcimgr handoff release {vm}` (--dry-run: nothing changed):")
        _lines(planner.undo_lines(found))
        return

    def work() -> None:
        again = _held(obj, vm)  # under the lock, after recovery: another may have finished it
        if again is None:
            click.echo(f"{vm} holds no hand-off; nothing to give back.")
            return
        from pcimgr.handoff import profiles
        report = planner.give_back(obj.machine, obj.state, again,
                                   profiles.load(obj.config_dir, vm))
        from pcimgr.core.errors import RolledBack
        from pcimgr.plans import transaction
        if transaction.INCOMPLETE in report:
            raise RolledBack(f"giving back {vm}'s devices: {report}; `pcimgr handoff release "
                             f"{vm}` tries again")
        obj.machine.system_log(f"pcimgr: {report}", {"PCIMGR_COMMAND": f"handoff release {vm}",
                                                      "PCIMGR_RESULT": "done"})
        click.echo(report[0].upper() + report[1:] + ".")
    run_locked(obj, obj.state, work)


def settle_orphans(obj: Context) -> list[str]:
    """Under the lock (recover, the boot's apply): give back each hand-off whose guest is
    gone without libvirt's release, and forget those of an earlier boot; a line for each."""
    from pcimgr.core.errors import PcimgrError
    from pcimgr.handoff import orphans, planner, profiles
    said = []
    for orphan in orphans.orphans(obj.machine, obj.state, time.time()):
        if isinstance(orphan, str):
            said.append(orphan)
            continue
        vm = orphan.found.vm
        try:
            report = planner.give_back(obj.machine, obj.state, orphan.found,
                                       profiles.load(obj.config_dir, vm))
        except PcimgrError as e:
            said.append(f"{vm}'s hand-off ({orphan.why}) was not given back: {e}")
            continue
        said.append(f"{vm}'s hand-off ({orphan.why}): {report}")
    return said


# -- the libvirt hook ----------------------------------------------------------------------

@click.group()
def hook() -> None:
    """The libvirt hook that runs the hand-offs (install, uninstall; and what it calls)."""


@hook.command("install")
@click.option("--prefix", metavar="DIR", help="Install below DIR instead of / (a chroot, an "
                                              "image being built).")
@click.option("--program", metavar="PATH",
              help="The pcimgr the hook runs [default: this one].")
@dry_run_option
@click.pass_obj
def hook_install(obj: Context, prefix: str | None, program: str | None, dry_run: bool) -> None:
    """Install /etc/libvirt/hooks/qemu.d/pcimgr (libvirt >= 6.5 runs every executable
    there; restart libvirtd after). It runs pcimgr only for guests with a hand-off."""
    import os

    from pcimgr.handoff import hookfile
    program = program or _this_program()
    if prefix is None and obj.machine.needs_root:  # libvirtd runs it as root
        from pcimgr.host import trust
        trust.root_program(program)
    roots: tuple[str, ...] = ()
    if obj.sysfs_root != "/sys":
        roots += ("--sysfs-root", os.path.abspath(obj.sysfs_root))
    if obj.state_dir:
        roots += ("--state-dir", os.path.abspath(obj.state_dir))
    text = hookfile.text(program, os.path.abspath(obj.config_dir), roots)
    target = _hook_target(obj, prefix)
    if dry_run:
        click.echo(f"Would write {target} (mode 0755):")
        _lines(text.splitlines())
        return

    def work() -> None:
        _write_hook(obj, prefix, text.encode())
        click.echo(f"Installed {target}; restart libvirtd (or virtqemud) so that it runs "
                   "the hook: `systemctl restart libvirtd`.")
    run_locked_config(obj, work)


@hook.command("uninstall")
@click.option("--prefix", metavar="DIR", help="As given to install.")
@click.pass_obj
def hook_uninstall(obj: Context, prefix: str | None) -> None:
    """Remove the hook (only pcimgr's own file)."""
    from pcimgr.core.errors import Refused
    from pcimgr.handoff import hookfile
    target = _hook_target(obj, prefix)

    def work() -> None:
        content = _read_hook(obj, prefix)
        if content is None:
            click.echo(f"No hook at {target}; nothing to do.")
            return
        if not hookfile.is_ours(content):
            raise Refused(f"refusing: {target} is not pcimgr's hook; remove it yourself")
        _remove_hook(obj, prefix)
        click.echo(f"Removed {target}.")
    run_locked_config(obj, work)


def _this_program() -> str:
    import os
    import shutil
    found = shutil.which("pcimgr")
    here = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0].endswith("pcimgr") else None
    return here or found or "/usr/bin/pcimgr"


def _hook_target(obj: Context, prefix: str | None) -> str:
    import os

    from pcimgr.handoff import hookfile
    return os.path.join(prefix or obj.machine.system_root, hookfile.REL)


def _read_hook(obj: Context, prefix: str | None) -> bytes | None:
    from pcimgr.handoff import hookfile
    from pcimgr.host import sysfiles
    return (sysfiles.read(prefix, hookfile.REL) if prefix
            else obj.machine.read_system_file(hookfile.REL))


def _write_hook(obj: Context, prefix: str | None, data: bytes) -> None:
    from pcimgr.handoff import hookfile
    from pcimgr.host import sysfiles
    if prefix:
        sysfiles.write(prefix, hookfile.REL, data, 0o755)
    else:
        obj.machine.write_system_file(hookfile.REL, data, 0o755)


def _remove_hook(obj: Context, prefix: str | None) -> None:
    import os

    from pcimgr.handoff import hookfile
    from pcimgr.host import sysfiles
    if prefix:
        os.unlink(sysfiles.path(prefix, hookfile.REL))
    else:
        obj.machine.remove_system_file(hookfile.REL)


@hook.command("qemu", hidden=True)
@click.argument("vm", metavar="GUEST")
@click.argument("operation")
@click.argument("sub")
@click.argument("extra", required=False)
@click.pass_obj
def hook_qemu(obj: Context, vm: str, operation: str, sub: str, extra: str | None) -> None:
    """What the installed hook runs: libvirt's arguments, the domain XML on stdin."""
    from pcimgr.core import handoff as model
    from pcimgr.core.errors import BadInput
    from pcimgr.handoff import profiles
    if (operation, sub) not in (("prepare", "begin"), ("release", "end")):
        return  # started, stopped, reconnect, migrate, attach...: nothing to do
    if not model.VM_NAME.fullmatch(vm) or profiles.load(obj.config_dir, vm) is None:
        return
    name, uuid = model.domain_of(sys.stdin.read(model.MAX_XML + 1))
    if name != vm:
        raise BadInput(f"the domain XML on stdin is {name!r}'s, not {vm!r}'s; pcimgr's hook "
                       "takes libvirt's arguments and XML together")
    if operation == "prepare":
        prepare(obj, vm, uuid, False)
    else:
        release(obj, vm, False)
