#!/usr/bin/python
# GPL-2.0-or-later

DOCUMENTATION = r"""
module: pcimgr_guest
short_description: Assign a PCI function or SR-IOV VF to a libvirt domain, or release it
description:
  - C(present) - unless the domain already has it, as C(pcimgr assign) - check the function
    and its IOMMU group, detach it to vfio-pci (pcimgr remembers the original driver),
    attach it to the domain.
  - C(absent) - if the domain has it, as C(pcimgr release) - detach it from every domain
    that has it, then give it back to its original driver unless O(keep_detached).
  - Refusals (the host uses it, a group mate in another domain, the domain is unknown) fail
    the task with pcimgr's one-line reason before anything is written.
version_added: 0.1.0
author: pcimgr developers
options:
  address:
    description: The function or VF, as C(04:00.0), C(0000:04:00.0) or C(pci_0000_04_00_0).
    type: str
    required: true
  domain:
    description: The libvirt domain's name or UUID.
    type: str
    required: true
  state:
    description: Whether the domain has the function.
    type: str
    choices: [present, absent]
    default: present
  group:
    description: Also detach the other functions of the IOMMU group (VFIO needs all).
    type: bool
    default: false
  managed:
    description: C(managed='yes') hands host binding to libvirt; by default pcimgr binds.
    type: bool
    default: false
  mac:
    description: An SR-IOV VF of a NIC goes in as C(<interface type='hostdev'>) with this MAC.
    type: str
  vlan:
    description: The VLAN tag of that interface, 1 to 4094 (as C(pcimgr assign --vlan)).
    type: int
  live:
    description: Hot-plug into the running guest. Default - if it is running.
    type: bool
  config:
    description: Change the persistent configuration. Default - if it has one.
    type: bool
  keep_detached:
    description: On C(absent), leave the function (and its group mates) on vfio-pci.
    type: bool
    default: false
  force:
    description: Go on although the host uses the function.
    type: bool
    default: false
  timeout:
    description: Seconds to wait for a guest to let go of the device, 0.1 to 3600.
    type: float
    default: 30
  uri:
    description: libvirt connection URI. Default C(LIBVIRT_DEFAULT_URI), else C(qemu:///system).
    type: str
extends_documentation_fragment:
  - pcimgr.host.common
"""

EXAMPLES = r"""
- name: A VF of the 82576 into vm2 as a NIC
  pcimgr.host.pcimgr_guest:
    address: "05:10.0"
    domain: vm2
    mac: "52:54:00:5e:00:01"
  become: true

- name: Take it back
  pcimgr.host.pcimgr_guest:
    address: "05:10.0"
    domain: vm2
    state: absent
  become: true
"""

RETURN = r"""
plan:
  description: The steps, sysfs writes and libvirt calls (check mode - what would be done).
  returned: always
  type: list
  elements: str
notes:
  description: pcimgr's notes.
  returned: always
  type: list
  elements: str
before:
  description: The function's C(driver) and C(holders) (domains that have it).
  returned: always
  type: dict
after:
  description: The same after (check mode - as the plan would leave it).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pcimgr.host.plugins.module_utils.pcimgr_common import (
    COMMON_ARGS,
    address,
    pcimgr_or_fail,
    run,
    session,
)


def main():
    module = AnsibleModule(argument_spec=dict(
        COMMON_ARGS,
        address=dict(type="str", required=True),
        domain=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        group=dict(type="bool", default=False),
        managed=dict(type="bool", default=False),
        mac=dict(type="str"),
        vlan=dict(type="int"),
        live=dict(type="bool"),
        config=dict(type="bool"),
        keep_detached=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        timeout=dict(type="float", default=30.0),
        uri=dict(type="str"),
    ), supports_check_mode=True)
    pcimgr_or_fail(module)
    from pcimgr.fleet import guest
    p = module.params
    # every value is checked in pcimgr.fleet by the CLI's rules (cli.rules)
    run(module, lambda: guest.ensure(
        session(module, p["uri"]), address(module, p["address"]), p["domain"],
        p["state"] == "present", p["group"], p["managed"], p["mac"], p["vlan"], p["live"],
        p["config"], p["keep_detached"], p["force"], p["timeout"]))


if __name__ == "__main__":
    main()
