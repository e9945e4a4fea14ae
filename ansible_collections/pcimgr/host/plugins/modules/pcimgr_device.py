#!/usr/bin/python
# GPL-2.0-or-later

DOCUMENTATION = r"""
module: pcimgr_device
short_description: Put a PCI function (or its IOMMU group) on vfio-pci, pci-stub or its host driver
description:
  - Makes a function's driver what is asked, through pcimgr's plans on the managed host, as
    C(pcimgr detach) and C(pcimgr rebind) do, in one transaction rolled back on failure.
  - With O(persistent), also keeps it across reboots (C(pcimgr define) / C(undefine)); the
    definition's checks run before anything is written, and a definition is never forced.
  - A function the host uses (its network, its disks) or a chipset function is refused; the
    task fails with pcimgr's one-line reason and nothing is written.
version_added: 0.1.0
author: pcimgr developers
options:
  address:
    description: The function, as C(04:00.0), C(0000:04:00.0) or C(pci_0000_04_00_0).
    type: str
    required: true
  driver:
    description:
      - C(vfio-pci) or C(pci-stub) take the function from its host driver.
      - C(host) gives it back to the driver it had before pcimgr moved it (or the kernel's
        choice when pcimgr has no record).
    type: str
    choices: [vfio-pci, pci-stub, host]
    default: vfio-pci
  group:
    description:
      - Also the other functions of its IOMMU group (VFIO uses a group whole), all or none.
    type: bool
    default: false
  persistent:
    description:
      - Keep it across reboots. With C(vfio-pci)/C(pci-stub) a definition is written; with
        C(host) the function's driver definition is removed.
    type: bool
    default: false
  force:
    description:
      - Go on although the host uses the function. Never for the chipset, never for a
        definition.
    type: bool
    default: false
extends_documentation_fragment:
  - pcimgr.host.common
"""

EXAMPLES = r"""
- name: Both ports of the 82571EB to vfio-pci, across reboots
  pcimgr.host.pcimgr_device:
    address: "04:00.0"
    group: true
    persistent: true
  become: true

- name: Give them back to e1000e and forget the definitions
  pcimgr.host.pcimgr_device:
    address: "04:00.0"
    driver: host
    group: true
    persistent: true
  become: true
"""

RETURN = r"""
plan:
  description: The steps with the exact sysfs writes (check mode - what would be done).
  returned: always
  type: list
  elements: str
notes:
  description: pcimgr's notes (already on the driver, nothing to give back, ...).
  returned: always
  type: list
  elements: str
before:
  description: Per function, its driver and its definition (in words) before.
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
        driver=dict(type="str", choices=["vfio-pci", "pci-stub", "host"], default="vfio-pci"),
        group=dict(type="bool", default=False),
        persistent=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
    ), supports_check_mode=True)
    pcimgr_or_fail(module)
    from pcimgr.fleet import device
    p = module.params
    run(module, lambda: device.ensure(session(module), address(module, p["address"]),
                                      p["driver"], p["group"], p["persistent"], p["force"]))


if __name__ == "__main__":
    main()
