#!/usr/bin/python
# GPL-2.0-or-later

DOCUMENTATION = r"""
module: pcimgr_vfs
short_description: A PF's SR-IOV VF count, the VFs' driver, and each VF's MAC/VLAN/QoS/trust/spoof check
description:
  - Makes the PF have O(count) VFs on O(driver), as C(pcimgr vfs create) (a different count
    goes through 0, in one transaction) or C(pcimgr vfs destroy) for 0, then sets each VF in
    O(vfs) through the PF as C(pcimgr vfs set) does, once the VFs exist.
  - VFs for vfio-pci are created with C(sriov_drivers_autoprobe) off, so no host driver or
    interface ever appears for them.
  - Refused, before any write, while a guest or a process holds a VF that would go, or when
    the PF has no driver that can create VFs; the task fails with pcimgr's one-line reason.
  - With O(persistent), the count, driver and settings are kept across reboots
    (C(pcimgr define --vfs)); count 0 removes the definition.
version_added: 0.1.0
author: pcimgr developers
options:
  pf:
    description: The PF's address.
    type: str
    required: true
  count:
    description: How many VFs, 0 to 65535 (the PF's limit applies); 0 removes them all.
    type: int
    required: true
  driver:
    description:
      - C(vfio-pci) for guests (no host driver ever touches them), or C(host) for the
        native VF driver (igbvf, iavf, ...).
    type: str
    choices: [vfio-pci, host]
    default: vfio-pci
  vfs:
    description: Settings of single VFs, by index. Settings not given are left as they are.
    type: list
    elements: dict
    default: []
    suboptions:
      index:
        description: The VF's index (virtfnN).
        type: int
        required: true
      mac:
        description: The MAC the guest sees.
        type: str
      vlan:
        description: Port VLAN id the PF applies, 0 (none) to 4094, as C(pcimgr vfs set --vlan).
        type: int
      qos:
        description: 802.1p priority of O(vfs[].vlan), 0 to 7.
        type: int
      trust:
        description: Let the guest change its MAC and use promiscuous mode.
        type: bool
      spoofchk:
        description: Drop frames the guest sends with another source MAC.
        type: bool
  pf_up:
    description: Bring the PF's interface up first (igb gives VFs of a PF that is down no carrier).
    type: bool
    default: false
  persistent:
    description: Keep the count, driver and settings across reboots (a definition).
    type: bool
    default: false
  force:
    description: Go on although the host uses a VF that would be removed.
    type: bool
    default: false
  timeout:
    description: Seconds to wait for VFs to appear and bind, or a VF in reset, 0.1 to 3600.
    type: float
    default: 30
extends_documentation_fragment:
  - pcimgr.host.common
"""

EXAMPLES = r"""
- name: Four VFs of the 82576 on vfio-pci, VF 0 with a MAC and VLAN, across reboots
  pcimgr.host.pcimgr_vfs:
    pf: "05:00.0"
    count: 4
    vfs:
      - index: 0
        mac: "52:54:00:5e:00:01"
        vlan: 100
    persistent: true
  become: true
"""

RETURN = r"""
plan:
  description: The steps with the exact writes and ip commands (check mode - what would be done).
  returned: always
  type: list
  elements: str
notes:
  description: pcimgr's notes and warnings (a PF that is down, counts already right).
  returned: always
  type: list
  elements: str
before:
  description: C(numvfs), C(vf_driver), the settings of the VFs in O(vfs), the definition.
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
    vf = dict(index=dict(type="int", required=True), mac=dict(type="str"),
              vlan=dict(type="int"), qos=dict(type="int"), trust=dict(type="bool"),
              spoofchk=dict(type="bool"))
    module = AnsibleModule(argument_spec=dict(
        COMMON_ARGS,
        pf=dict(type="str", required=True),
        count=dict(type="int", required=True),
        driver=dict(type="str", choices=["vfio-pci", "host"], default="vfio-pci"),
        vfs=dict(type="list", elements="dict", options=vf, default=[]),
        pf_up=dict(type="bool", default=False),
        persistent=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        timeout=dict(type="float", default=30.0),
    ), supports_check_mode=True)
    pcimgr_or_fail(module)
    from pcimgr.fleet import vfs
    p = module.params
    run(module, lambda: vfs.ensure(session(module), address(module, p["pf"]), p["count"],
                                   p["driver"], p["vfs"], p["pf_up"], p["persistent"],
                                   p["force"], p["timeout"]))


if __name__ == "__main__":
    main()
