# GPL-2.0-or-later


class ModuleDocFragment:
    """Options every pcimgr module takes: where the host's sysfs, state and definitions are."""

    DOCUMENTATION = r"""
options:
  sysfs_root:
    description:
      - Root of the sysfs tree. C(/sys), or a simulated host's directory made by
        C(pcimgr sim create DIR), on which changes need no root.
    type: path
    default: /sys
  state_dir:
    description:
      - pcimgr's journal, lock and original-driver records.
      - Default C(/var/lib/pcimgr), or inside a simulated host.
    type: path
  config_dir:
    description:
      - Where definitions (what is kept across reboots) live.
      - Default C(/etc/pcimgr), or inside a simulated host.
    type: path
  lock_timeout:
    description:
      - Seconds a change waits for another pcimgr run to finish, 0 to 3600 (as
        C(pcimgr --lock-timeout); nan and inf are refused).
    type: float
    default: 30
requirements:
  - pcimgr installed on the managed host, importable by C(ansible_python_interpreter)
notes:
  - Changes on a real host need root (C(become)). Check mode needs none.
"""
