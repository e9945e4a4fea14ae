"""`pcimgr assign UUID VM` and `pcimgr release UUID`: an mdev goes to a guest as
<hostdev mode='subsystem' type='mdev' model=...>, the model from its type's device_api.

Nothing moves between host drivers: the mdev is VFIO's from its creation. Release takes it
out of every domain whose XML names it, live and persistent; the mdev stays (`mdev
remove` removes it).
"""

from __future__ import annotations

from collections.abc import Mapping

from pcimgr.core import hostdev_xml
from pcimgr.core import mdev as core_mdev
from pcimgr.core.errors import Refused
from pcimgr.guests.pools import live_config
from pcimgr.guests.steps import AttachDevice, DetachDevice
from pcimgr.host import mdevs
from pcimgr.host.libvirt_adapter import Domain, Libvirt
from pcimgr.host.machine import Machine
from pcimgr.mdev import definitions
from pcimgr.plans import transaction as plans
from pcimgr.plans.runner import Proposal
from pcimgr.plans.step import Step


def xml(machine: Machine, uuid: str) -> str:
    """The <hostdev> for a live mdev; Refused for a device_api libvirt has no model for."""
    found = mdevs.require_mdev(machine.sysfs, uuid)
    kind = mdevs.read_type(machine.sysfs, found.parent, found.type_id) if found.type_id \
        else None
    model = kind.model if kind is not None else None
    if model is None:
        raise Refused(f"refusing: mdev {uuid} ({found.type_id or 'no type'} on "
                      f"{found.parent}) has device_api {kind.device_api if kind else None!r}, "
                      f"for which libvirt has no <hostdev type='mdev'> model "
                      f"({', '.join(core_mdev.MODELS)})")
    return hostdev_xml.to_string(core_mdev.hostdev(uuid, model))


def plan_assign(machine: Machine, lv: Libvirt, assigned: Mapping[str, list[str]], uuid: str,
                vm: str, live: bool | None, config: bool | None) -> Proposal:
    element = xml(machine, uuid)
    domain = lv.domain(vm)
    held = [d for d in assigned.get(uuid, []) if d != domain.name]
    if held:
        raise Refused(f"refusing: mdev {uuid} is assigned to {', '.join(held)} already; "
                      f"`pcimgr release {uuid}` first")
    live, config = live_config(domain, live, config)
    notes = []
    if config and definitions.find(machine, uuid) is None:
        notes.append(f"note: mdev {uuid} has no definition, so after a reboot "
                     f"{domain.name}'s configuration names an mdev that is not there; "
                     f"`pcimgr mdev define --uuid {uuid} --auto` keeps it")
    step = AttachDevice(uuid, lv.uri, domain.name, domain.uuid, element, live, config)
    return Proposal(plans.Plan(f"assign {uuid} {domain.name}", (step,)), None, tuple(notes))


def plan_release(lv: Libvirt, domains: list[Domain], uuid: str, timeout: float) -> Proposal:
    steps: list[Step] = []
    for d in domains:
        live = core_mdev.element_of(d.live_xml, uuid) if d.active else None
        config = core_mdev.element_of(d.config_xml, uuid)
        if live is None and config is None:
            continue
        steps.append(DetachDevice(
            uuid, lv.uri, d.name, d.uuid,
            None if live is None else hostdev_xml.to_string(live),
            None if config is None else hostdev_xml.to_string(config), timeout))
    notes = () if steps else (f"no guest has mdev {uuid}",)
    return Proposal(plans.Plan(f"release {uuid}", tuple(steps)), None, notes)
