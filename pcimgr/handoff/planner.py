"""The hand-off's two halves as plans: take (libvirt's prepare) after a read-only preflight
that refuses before any change, and give back (release), which replays the recorded
inverses in reverse.

The preflight holds the profile's functions to the rules every pcimgr move meets (the group,
the host-dependency survey, the chipset) and adds a desktop's: processes holding the
functions' device nodes, fbcon and the boot framebuffer, the host driver's module, hugepages
and CPUs. Nothing here asks libvirt: the hook runs while libvirtd waits on it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple

from pcimgr.core import handoff
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, Damaged, PcimgrError, Refused
from pcimgr.core.handoff import Profile
from pcimgr.core.model import Host, PciDevice
from pcimgr.drivers.binding import BindDriver
from pcimgr.drivers.planner import plan_detach
from pcimgr.drivers.safety import concerns
from pcimgr.handoff import steps
from pcimgr.host import display
from pcimgr.host.machine import Machine
from pcimgr.host.sysfs import device_path
from pcimgr.host.usage import Survey
from pcimgr.plans import records, transaction
from pcimgr.plans.runner import Proposal

if TYPE_CHECKING:
    from pcimgr.plans.step import Step

FORCE_FIX = ("define the hand-off with --force if the host can really do without it "
             "(`pcimgr handoff define ... --force`)")
SYSFB_FIX = ("boot with initcall_blacklist=sysfb_init (or video=simplefb:off) so that no "
             "firmware framebuffer sits on the GPU (`pcimgr doctor --fix` adds it)")


def record_rel(vm: str) -> str:
    return f"handoffs/{handoff.check_vm(vm)}.json"


def plan_take(machine: Machine, host: Host, survey: Survey, profile: Profile,
              uuid: str | None = None, state: str | None = None) -> Proposal:
    """The preflight, then the plan; Refused (one line, exit 4) before anything changes.
    state: where the other guests' hand-offs are recorded (CPU isolation is one's at a
    time)."""
    addresses = tuple(PciAddress.parse(a) for a in profile.addresses)
    for a in addresses:
        host.require(a)
    detach = _detach(machine, host, survey, profile, addresses)
    moving = [host.require(PciAddress.parse(s.address)) for s in detach.plan.steps
              if isinstance(s, BindDriver)]
    first, vm = profile.addresses[0], profile.vm
    before: list[Step] = []
    nodes = {n: str(d.address) for d in moving for n in display.nodes_of(machine, str(d.address))}
    dm = _display_manager(machine, profile)
    if _refuse_holders(machine, nodes, dm):  # the display manager's own hold them
        before.append(steps.StopUnit(first, vm, profile.display_manager or "",
                                     tuple(sorted(nodes))))
    before += _consoles(machine, profile, moving)
    after: list[Step] = []
    after += _unload(machine, profile, moving, first)
    after += _hugepages(machine, profile, first)
    after += _cpus(machine, profile, first, state)
    plan = transaction.Plan(f"handoff prepare {profile.vm}",
                            (*before, *detach.plan.steps, *after))
    held = {"vm": profile.vm, "uuid": uuid, "boot_id": display.boot_id(machine),
            "taken": time.time(), "steps": [s.to_json() for s in plan.steps]}
    return Proposal(plan, detach.module, detach.notes, ((record_rel(profile.vm), held),),
                    detach.also_load)


def _detach(machine: Machine, host: Host, survey: Survey, profile: Profile,
            addresses: tuple[PciAddress, ...]) -> Proposal:
    """The drivers' plan. The profile's --framebuffer is the administrator's consent to
    take the boot display and its console; anything else the host uses needs --force."""
    def plan(force: bool) -> Proposal:
        return plan_detach(machine, host, survey, addresses, profile.driver, profile.group,
                           force, driver_hint=False)
    try:
        return plan(profile.force)
    except Refused as e:
        if not e.forceable:
            raise
        refused = e
    taken = [host.require(a) for a in addresses]
    if profile.group:
        taken += [m for d in list(taken) if d.iommu_group is not None
                  for m in host.groups[d.iommu_group].members if m not in taken]
    found = concerns(machine.sysfs, host, taken, survey)
    if found and all(_console(c.reason) for c in found):
        if profile.framebuffer:
            return plan(True)
        raise Refused(f"refusing: {found[0].address} carries the host's console ("
                      + ", ".join(c.reason for c in found) + "); define the hand-off with "
                      "--framebuffer to take it while the guest runs")
    raise Refused(f"{refused.problem}; {FORCE_FIX}") from None


def _console(reason: str) -> bool:
    return reason == "it is the boot display" or reason.endswith("drives the console")


def _display_manager(machine: Machine, profile: Profile) -> str | None:
    """The unit's own name (an alias resolved) when it runs and is to be stopped."""
    unit = profile.display_manager
    if unit is None:
        return None
    state = machine.unit_state(unit)
    if state is None:
        raise Refused(f"refusing: the profile stops {unit}, but systemd is not this host's "
                      "service manager; stop the display manager yourself, or define the "
                      "hand-off without --stop-display-manager")
    if not state.loaded:
        raise Refused(f"refusing: the profile stops {unit}, which this host does not have "
                      f"(`systemctl status {unit}`); name the display manager's own unit "
                      "with --stop-display-manager=UNIT")
    return state.id if state.running else None


def _refuse_holders(machine: Machine, nodes: dict[str, str], dm: str | None) -> bool:
    """A process with a function's node open keeps its driver busy: an unbind would wait on
    it for ever (nvidia, amdgpu) or pull the device from under it. With a display manager
    to stop, its processes and the login sessions it runs may hold them (GDM's greeter and
    X sessions are session-N.scope, a Wayland shell runs in user@UID.service): stopping it
    ends them, which its step then waits for. True when something of it holds them."""
    if not nodes:
        return False
    held, ours = [], False
    for node, holders in sorted(machine.node_holders(list(nodes)).items()):
        for h in holders:
            if dm is not None and (h.unit == dm or _session(h.unit)):
                ours = True
            else:
                held.append(f"{node} of {nodes[node]} is open by {h}")
    if held:
        hint = ("stop them first" if dm is not None else
                "stop them first, or define the hand-off with --stop-display-manager if the "
                "display manager is theirs")
        raise Refused(f"refusing: {'; '.join(dict.fromkeys(held))}; {hint}")
    return ours


def _session(unit: str | None) -> bool:
    return unit is not None and ((unit.startswith("session-") and unit.endswith(".scope"))
                                 or (unit.startswith("user@") and unit.endswith(".service")))


def _consoles(machine: Machine, profile: Profile, moving: list[PciDevice]) -> list[Step]:
    """fbcon off its console and the boot framebuffer's driver off its device, for the
    framebuffers on the functions taken (their own, or firmware's on their BARs)."""
    sysfs = machine.sysfs
    iomem = (machine.read_system_file("proc/iomem") or b"").decode("ascii", "replace")
    boot_fbs = display.boot_framebuffers(sysfs)
    out: list[Step] = []
    fbcon = [v for v in display.vtconsoles(sysfs) if v.is_fbcon]
    for d in moving:
        a = str(d.address)
        own = display.framebuffers_of(sysfs, a)
        claims = display.iomem_claims(iomem, a)
        firmware = [b for b in boot_fbs if claims and b.driver is not None]
        if any(b.driver == display.SYSFB_DRM for b in firmware):
            raise Refused(f"refusing: {display.SYSFB_DRM} drives the firmware framebuffer "
                          f"on {a} ({', '.join(claims)} in /proc/iomem): the BAR stays "
                          f"claimed after an unbind (\"BAR 0: can't reserve\"); {SYSFB_FIX}")
        if not (own or firmware):
            continue
        on = ", ".join(f"{b.driver} on {b.device}" for b in firmware)
        what = ", ".join(own) if own else f"the firmware framebuffer ({on})"
        if not profile.framebuffer:
            raise Refused(f"refusing: {a} carries {what}, the host's console; define the "
                          "hand-off with --framebuffer to take it while the guest runs")
        if sysfs.exists("class/graphics/fbcon") and not fbcon:
            raise Refused(f"refusing: fbcon runs on {what} of {a}, but no virtual console "
                          "in /sys/class/vtconsole is fbcon's, so it cannot be unbound; "
                          "boot with fbcon=map:9 or without fbcon (fbcon=nodefer is no "
                          "help), then define the hand-off again")
        for v in fbcon:
            if v.bound and not any(isinstance(s, steps.UnbindConsole) and s.vtcon == v.name
                                   for s in out):
                out.append(steps.UnbindConsole(a, profile.vm, v.name))
        out += [steps.UnbindPlatform(a, profile.vm, b.device, b.driver or "")
                for b in firmware]
    return out


def _unload(machine: Machine, profile: Profile, moving: list[PciDevice],
            first: str) -> list[Step]:
    """The named functions' host driver (not their group mates': an HDA audio function
    goes with its GPU, but the host's other audio keeps snd_hda_intel)."""
    if not profile.unload_driver:
        return []
    out: list[Step] = []
    taken = {str(d.address) for d in moving}
    named = [d for d in moving if str(d.address) in profile.addresses]
    for driver in sorted({d.driver for d in named if d.driver}):
        module = display.module_of(machine.sysfs, driver)
        if module is None:
            raise Refused(f"refusing: sysfs names no module of {driver}, so it cannot be "
                          "unloaded; define the hand-off without --unload-driver")
        if module.builtin:
            raise Refused(f"refusing: {driver} is built into the kernel, so it cannot be "
                          "unloaded; define the hand-off without --unload-driver")
        if module.name != driver.replace("-", "_"):
            raise Refused(f"refusing: {driver} comes from the module {module.name}, which "
                          "may drive more than it; define the hand-off without "
                          "--unload-driver")
        if module.holders:
            raise Refused(f"refusing: the module {module.name} is in use by "
                          f"{', '.join(module.holders)}; unload them first or define the "
                          "hand-off without --unload-driver")
        # every function it drives, not only those this reading of the bus found
        others = [n for n in machine.sysfs.list_dir(f"bus/pci/drivers/{driver}")
                  if _is_address(n) and n not in taken]
        if others:
            raise Refused(f"refusing: {driver} also drives {', '.join(others)}, which stay "
                          "on the host; define the hand-off without --unload-driver")
        out.append(steps.UnloadModule(first, profile.vm, module.name))
    return out


def _is_address(name: str) -> bool:
    try:
        return str(PciAddress.parse(name)) == name
    except BadInput:
        return False


def _hugepages(machine: Machine, profile: Profile, first: str) -> list[Step]:
    wanted = profile.hugepages
    if wanted is None:
        return []
    size = handoff.size_name(wanted.size_kb)
    pool = display.hugepage_pool(machine.sysfs, wanted.size_kb)
    if pool is None:
        offered = ", ".join(handoff.size_name(s) for s in display.hugepage_sizes(machine.sysfs))
        raise Refused(f"refusing: the kernel offers no hugepages of {size} (it offers "
                      f"{offered or 'none'}); boot with hugepagesz={size} or define the "
                      "hand-off with another size")
    need = wanted.pages - pool.free
    if need <= 0:
        return []
    available = display.mem_available_kb(machine)
    if available is None or need * wanted.size_kb > available:
        raise Refused(f"refusing: {profile.vm} needs {need} more hugepages of {size} "
                      f"({need * wanted.size_kb // 1024} MiB) and the host has "
                      + (f"{available // 1024} MiB available" if available is not None
                         else "no MemAvailable in /proc/meminfo")
                      + "; free memory or reserve them at boot (hugepages=)")
    return [steps.ReserveHugepages(first, profile.vm, wanted.size_kb, pool.total,
                                   pool.total + need)]


def _cpus(machine: Machine, profile: Profile, first: str, state: str | None) -> list[Step]:
    if profile.isolate_cpus is None:
        return []
    from pcimgr.handoff import orphans
    for other in orphans.held_names(state) if state else []:
        found = held(machine, state or "", other)
        if other != profile.vm and found is not None and not found.stale and any(
                isinstance(s, steps.RestrictCpus) for s in found.steps):
            raise Refused(f"refusing: {other}'s hand-off keeps the host off CPUs now, and "
                          "one hand-off at a time may (each gives back what it found); stop "
                          f"{other} first")
    online = handoff.parse_cpus(display.cpus_online(machine.sysfs) or "0")
    guest = handoff.parse_cpus(profile.isolate_cpus)
    if not guest <= online:
        raise Refused(f"refusing: CPUs {handoff.format_cpus(guest - online)} are not online "
                      f"(online: {handoff.format_cpus(online)})")
    left = online - guest
    if not left:
        raise Refused(f"refusing: --isolate-cpus {profile.isolate_cpus} leaves the host no "
                      "CPU; leave it at least one")
    if machine.unit_state("system.slice") is None:
        raise Refused("refusing: isolating CPUs takes systemd's slices, and systemd is not "
                      "this host's service manager")
    return [steps.RestrictCpus(first, profile.vm, unit, handoff.format_cpus(left),
                               machine.unit_property(unit, "AllowedCPUs"))
            for unit in steps.SLICES]


# -- giving back ---------------------------------------------------------------------------

class Held(NamedTuple):
    vm: str
    steps: tuple[Step, ...]
    stale: bool       # recorded in another boot: what it took came back with the boot
    taken: float


def held(machine: Machine, state: str, vm: str) -> Held | None:
    """The guest's hand-off record, its steps checked as a journal's; None without one."""
    data = records.load(state, record_rel(vm))
    if data is None:
        return None
    try:
        taken = tuple(transaction.read_step(s) for s in data["steps"])
    except ValueError as e:
        raise Damaged(f"refusing the hand-off record {state}/{record_rel(vm)}: {e}; "
                      f"{records.HANDOFF_FIX}") from None
    if data["vm"] != vm:
        raise Damaged(f"refusing the hand-off record {state}/{record_rel(vm)}: it is "
                      f"{data['vm']!r}'s; {records.HANDOFF_FIX}")
    return Held(vm, taken, data["boot_id"] != display.boot_id(machine), float(data["taken"]))


def forget(state: str, found: Held) -> records.Changes:
    """The record changes of a hand-off given back: its record and the original-driver
    records of the functions it moved."""
    changes = records.Changes(state)
    changes.set(record_rel(found.vm), None)
    for step in found.steps:
        for address, _ in step.undo_moves():
            changes.set(records.device_rel(address), None)
    return changes


def give_back(machine: Machine, state: str, found: Held, profile: Profile | None) -> str:
    """Undo the recorded steps in reverse (each acts only on what differs now, so a repeated
    or interrupted release is finished by the next); the record goes when all are undone.

    The record is data on disk: it may move only the profile's functions (and their group
    mates with --group), held to the host-dependency rules with the profile's consent."""
    from pcimgr.drivers import recovery
    changes = forget(state, found)
    if found.stale:
        changes.commit()
        return (f"{found.vm}'s hand-off was recorded in an earlier boot: the host started "
                "afresh, nothing to give back; its record is removed")
    vet_steps(machine, found.vm, profile, found.steps)
    consent = profile is not None and (profile.force or profile.framebuffer)
    try:
        recovery.vet(machine, consent)(found.steps)
    except PcimgrError as e:  # the vet's refusals name what they would move
        raise Refused(f"refusing to give back {found.vm}'s devices: {e}") from None
    report = transaction.roll_back(found.steps, machine)
    if transaction.INCOMPLETE in report:
        return report
    changes.commit()
    return f"gave back what {found.vm} took: {report.removeprefix('rolled back: ')}"


def vet_steps(machine: Machine, vm: str, profile: Profile | None,
              taken: tuple[Step, ...]) -> None:
    """Refused when a step of VM's record (or of a killed prepare's journal) does what VM's
    profile does not allow: a record is data on disk, and undoing it runs as root."""
    def refuse(what: str) -> Refused:
        return Refused(f"refusing to undo {vm}'s hand-off: its record {what}, which "
                       + ("its profile does not allow" if profile is not None else
                          "no profile allows (it was undefined)")
                       + f"; {records.HANDOFF_FIX}")
    allowed = scope(machine, profile) if profile is not None else set()
    strays = sorted({a for s in taken for a, _ in s.undo_moves()} - allowed)
    if strays:
        raise refuse(f"moves {', '.join(strays)}")
    originals = {(s.original_driver or "").replace("-", "_") for s in taken
                 if isinstance(s, BindDriver)}
    for s in taken:
        if not isinstance(s, steps.Checked):
            continue
        if s.vm != vm:
            raise refuse(f"holds a step of {s.vm}'s")
        if profile is None:
            raise refuse(f"has a {s.kind} step")
        if isinstance(s, steps.StopUnit) and s.unit != profile.display_manager:
            raise refuse(f"starts {s.unit}")
        if isinstance(s, (steps.UnbindConsole, steps.UnbindPlatform)) and \
                not profile.framebuffer:
            raise refuse("binds a console or framebuffer")
        if isinstance(s, steps.UnloadModule) and not (
                profile.unload_driver and s.kernel_module in originals):
            raise refuse(f"loads the module {s.kernel_module}")
        if isinstance(s, steps.ReserveHugepages) and not (
                profile.hugepages and s.size_kb == profile.hugepages.size_kb
                and s.target - s.before <= profile.hugepages.pages):
            raise refuse("changes a hugepage pool")
        if isinstance(s, steps.RestrictCpus):
            kept, before = handoff.parse_cpus(s.allowed), s.before
            guest = handoff.parse_cpus(profile.isolate_cpus or "0")
            if profile.isolate_cpus is None or kept & guest or (
                    before and not kept <= handoff.parse_cpus(before)):
                raise refuse(f"sets {s.unit}'s AllowedCPUs to {before or 'all'}")


def scope(machine: Machine, profile: Profile) -> set[str]:
    """The functions a profile may move: those it names, with their IOMMU groups' with
    --group."""
    found = set(profile.addresses)
    if profile.group:
        for a in profile.addresses:
            link = machine.sysfs.read_link(device_path(a, "iommu_group"))
            if link is not None:
                group = link.rsplit("/", 1)[-1]
                found.update(machine.sysfs.list_dir(f"kernel/iommu_groups/{group}/devices"))
    return found


def undo_lines(found: Held) -> list[str]:
    lines: list[str] = []
    for n, step in enumerate(reversed(found.steps), 1):
        lines.append(f"{n}. undo: {step.summary()}")
        lines += [f"     {w}" for w in step.undo_describe()]
    return lines

