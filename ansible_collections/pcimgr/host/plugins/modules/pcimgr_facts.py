#!/usr/bin/python
# GPL-2.0-or-later

DOCUMENTATION = r"""
module: pcimgr_facts
short_description: PCI functions, IOMMU groups, SR-IOV VFs and pcimgr definitions as facts
description:
  - Sets C(ansible_facts.pcimgr) to what C(pcimgr list --all --json), C(pcimgr groups --json)
    and C(pcimgr vfs list --json) print, the definitions with their status, the host's name
    and pcimgr's version, read with pcimgr's library on the managed host.
  - The same document C(pcimgr export facts) prints; C(pcimgr export FORMAT --facts FILE ...)
    builds the device plugin, KubeVirt, Proxmox and Nova configurations from it.
  - Reads only. C(holders) is null (libvirt is not asked).
version_added: 0.1.0
author: pcimgr developers
options:
  host_name:
    description:
      - The host's name in the facts, so that facts of many hosts merge (the fleet
        inventory, Proxmox's node). Default the host's own hostname; in a playbook
        C("{{ inventory_hostname }}") is the usual choice.
    type: str
extends_documentation_fragment:
  - pcimgr.host.common
"""

EXAMPLES = r"""
- name: Gather pcimgr facts under the inventory name
  pcimgr.host.pcimgr_facts:
    host_name: "{{ inventory_hostname }}"

- name: The functions on vfio-pci
  ansible.builtin.debug:
    msg: "{{ ansible_facts.pcimgr.devices | selectattr('driver', 'eq', 'vfio-pci')
             | map(attribute='address') | list }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts under the key C(pcimgr).
  returned: always
  type: dict
  contains:
    pcimgr:
      description:
        - C(format) (1), C(host), C(pcimgr_version), C(machine) (C(this host) or C(a simulated host)), C(devices) (list --all
          --json), C(groups) (groups --json), C(vfs) (vfs list --json), C(definitions)
          (each definition's fields with C(ok) and C(drift) as status reports them).
        - The shapes are docs/json.md's.
      type: dict
      returned: always
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pcimgr.host.plugins.module_utils.pcimgr_common import (
    COMMON_ARGS,
    pcimgr_or_fail,
    session,
)


def main():
    module = AnsibleModule(argument_spec=dict(COMMON_ARGS, host_name=dict(type="str")),
                           supports_check_mode=True)
    pcimgr_or_fail(module)
    from pcimgr.core.errors import PcimgrError
    from pcimgr.fleet import facts
    from pcimgr.host.names import Namer
    try:
        s = session(module)
        found = facts.gather(s.machine, s.config_dir, Namer(), module.params["host_name"])
    except PcimgrError as e:
        module.fail_json(msg=str(e), exit_code=e.exit_code)
    module.exit_json(changed=False, ansible_facts=dict(pcimgr=found))


if __name__ == "__main__":
    main()
