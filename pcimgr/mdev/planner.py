"""mdev plans: create, remove, start a definition, start a parent's auto ones; and the
checks that come first: the parent and its type exist, the capacity is there
(available_instances), the UUID is free, and nothing holds an mdev that is to go.
"""

from __future__ import annotations

import uuid as uuids
from collections.abc import Mapping

from pcimgr.core.errors import BadInput, NotFound, Refused
from pcimgr.core.mdev import Definition, Mdev, MdevParent, MdevType
from pcimgr.host import mdevs
from pcimgr.host.machine import Machine
from pcimgr.host.mdevs import require_mdev, require_parent, require_type
from pcimgr.mdev import definitions
from pcimgr.mdev.steps import CreateMdev, RemoveMdev
from pcimgr.plans import transaction as plans
from pcimgr.plans.runner import Proposal
from pcimgr.plans.step import Step

# uuid -> the domains whose XML names it (None: libvirt could not be asked)
Assigned = Mapping[str, list[str]]


def _refuse_capacity(parent: MdevParent, kind: MdevType, count: int = 1) -> None:
    if kind.available is None or kind.available >= count:
        return
    live = [f"{len(t.devices)} of {t.id}" for t in parent.types if t.devices]
    asked = f"; {count} are to start" if count > 1 else ""
    raise Refused(f"refusing: {parent.name} has {kind.available} instance(s) of "
                  f"{kind.id} left (available_instances){asked}"
                  + (f"; its live mdevs ({', '.join(live)}) take its capacity: remove one "
                     "(`pcimgr mdev list`)" if live else ""))


def plan_create(machine: Machine, parent_name: str, type_id: str, uuid: str | None,
                attrs: tuple[tuple[str, str], ...]) -> Proposal:
    sysfs = machine.sysfs
    parent = require_parent(sysfs, parent_name)
    kind = require_type(parent, type_id)
    chosen = uuid or str(uuids.uuid4())
    existing = mdevs.read_mdev(sysfs, chosen)
    if existing is not None:
        if existing.parent == parent.name and existing.type_id == type_id:
            return Proposal(plans.Plan(f"mdev create {parent.name} {type_id}", ()), None,
                            (f"mdev {chosen} already exists on {parent.name} as {type_id}",))
        raise Refused(f"refusing: mdev {chosen} exists already, on {existing.parent} as "
                      f"{existing.type_id}; choose another --uuid or remove it first")
    _refuse_capacity(parent, kind)
    step = CreateMdev(chosen, parent.name, type_id, attrs)
    return Proposal(plans.Plan(f"mdev create {parent.name} {type_id} --uuid {chosen}",
                               (step,)), None, ())


def refuse_held(machine: Machine, found: list[Mdev], assigned: Assigned | None,
                force_stop: bool = False) -> None:
    """An mdev a guest's XML names is released first; one whose /dev/vfio group a process
    holds cannot go (the kernel's remove would block until it lets go)."""
    named = [f"{m.uuid} ({', '.join(assigned[m.uuid])})" for m in found
             if assigned and assigned.get(m.uuid)]
    if named and not force_stop:
        raise Refused(f"refusing: assigned to guests: {'; '.join(named)}; "
                      "`pcimgr release UUID` first")
    holders = machine.vfio_holders()
    busy = [f"{m.uuid} (IOMMU group {m.iommu_group}, /dev/vfio/{m.iommu_group} open by "
            f"{', '.join(holders[m.iommu_group])})"
            for m in found if m.iommu_group is not None and m.iommu_group in holders]
    if busy:
        raise Refused(f"refusing: removing would block until it is released: "
                      f"{'; '.join(busy)}; stop the guest or process using it first")


def plan_remove(machine: Machine, uuid: str, assigned: Assigned | None) -> Proposal:
    sysfs = machine.sysfs
    found = require_mdev(sysfs, uuid)
    refuse_held(machine, [found], assigned)
    if found.type_id is None or found.parent == "?":
        raise Refused(f"refusing: mdev {uuid} shows no type or parent pcimgr can read, so a "
                      "rollback could not create it again; `echo 1 > "
                      f"/sys/{mdevs.mdev_path(uuid, 'remove')}` removes it by hand")
    defined = definitions.find(machine, uuid)
    attrs = defined.attrs if defined is not None else ()
    return Proposal(plans.Plan(f"mdev remove {uuid}", (
        RemoveMdev(uuid, found.parent, found.type_id, attrs),)), None, ())


def plan_start(machine: Machine, defined: list[Definition], command: str,
               skip_failing: bool = False) -> Proposal:
    """Create what the definitions describe and is not there; one whose UUID is live with
    another parent or type is refused, as mdevctl refuses it. skip_failing (a parent's auto
    definitions): such a definition is left out with a note, the others still start."""
    sysfs = machine.sysfs
    steps: list[Step] = []
    notes = []
    wanted: dict[tuple[str, str], int] = {}
    for d in defined:
        try:
            live = mdevs.read_mdev(sysfs, d.uuid)
            if live is not None:
                if (live.parent, live.type_id) != (d.parent, d.type_id):
                    raise Refused(f"refusing: mdev {d.uuid} runs on {live.parent} as "
                                  f"{live.type_id}, but its definition says {d.parent} "
                                  f"{d.type_id}; remove it or correct the definition")
                notes.append(f"mdev {d.uuid} is running already")
                continue
            parent = require_parent(sysfs, d.parent)
            kind = require_type(parent, d.type_id)
            count = wanted.get((d.parent, d.type_id), 0) + 1
            _refuse_capacity(parent, kind, count)
        except (NotFound, Refused) as e:
            if not skip_failing:
                raise
            notes.append(f"not starting mdev {d.uuid}: {e}")
            continue
        wanted[(d.parent, d.type_id)] = count
        steps.append(CreateMdev(d.uuid, d.parent, d.type_id, d.attrs))
    return Proposal(plans.Plan(command, tuple(steps)), None, tuple(notes))


def new_definition(machine: Machine, uuid: str | None, parent: str | None,
                   type_id: str | None, auto: bool,
                   attrs: tuple[tuple[str, str], ...]) -> Definition:
    """What `mdev define` writes: a live mdev's parent and type (given or not), or those
    given, checked against the parent when it is there."""
    sysfs = machine.sysfs
    live = mdevs.read_mdev(sysfs, uuid) if uuid else None
    if live is not None:
        if parent and parent != live.parent or type_id and type_id != live.type_id:
            raise BadInput(f"mdev {uuid} runs on {live.parent} as {live.type_id}; define it "
                           "with those (or without --parent and --type)")
        parent, type_id = live.parent, live.type_id
    if not parent or not type_id:
        raise BadInput("give the parent and the type (`pcimgr mdev define PARENT TYPE`), or "
                       "the UUID of a running mdev (`--uuid`)")
    there = mdevs.read_parent(sysfs, parent)
    if there is not None:  # a parent not there now may be at boot (a driver loaded later)
        require_type(there, type_id)
    chosen = uuid or str(uuids.uuid4())
    existing = definitions.find(machine, chosen)
    if existing is not None and (existing.parent, existing.type_id) != (parent, type_id):
        raise Refused(f"refusing: mdev {chosen} is defined already, on {existing.parent} as "
                      f"{existing.type_id}; `pcimgr mdev undefine {chosen}` first")
    return Definition(chosen, parent, type_id, "auto" if auto else "manual", attrs)
