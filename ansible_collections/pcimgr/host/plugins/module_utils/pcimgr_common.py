# GPL-2.0-or-later
"""What the pcimgr modules share: the common options, pcimgr's session, and turning its
results and refusals into Ansible's (changed, diff, one-line failed)."""

from __future__ import annotations

import json
import traceback

COMMON_ARGS = dict(
    sysfs_root=dict(type="path", default="/sys"),
    state_dir=dict(type="path"),
    config_dir=dict(type="path"),
    lock_timeout=dict(type="float", default=30.0),
)


def pcimgr_or_fail(module):
    """The pcimgr package on the managed host, or a failure that says how to get it."""
    try:
        import pcimgr.fleet.session  # noqa: F401
    except ImportError as e:
        module.fail_json(msg=f"pcimgr is not importable on the managed host ({e}); install it "
                             "there and point ansible_python_interpreter at that Python")
    import pcimgr
    return pcimgr


def session(module, connect=None):
    from pcimgr.fleet.session import Session
    p = module.params
    return Session(p["sysfs_root"], p["state_dir"], p["config_dir"], p["lock_timeout"],
                   module.check_mode, connect)


def address(module, text):
    """A PCI address as pcimgr reads it (04:00.0, 0000:04:00.0, pci_0000_04_00_0)."""
    from pcimgr.core.address import PciAddress
    from pcimgr.core.errors import PcimgrError
    try:
        return PciAddress.parse(text)
    except PcimgrError as e:
        module.fail_json(msg=str(e), exit_code=e.exit_code)


def run(module, change):
    """change() -> pcimgr.fleet.session.Result; exit with it, or fail with pcimgr's message.

    Planning raises before the first write, so a refusal is never a partial change.
    """
    from pcimgr.core.errors import PcimgrError
    try:
        result = change()
    except PcimgrError as e:
        module.fail_json(msg=str(e), exit_code=e.exit_code)
    except Exception as e:  # noqa: BLE001 - one line, the traceback as a field
        module.fail_json(msg=f"internal error: {type(e).__name__}: {e}",
                         exception=traceback.format_exc())
    out = dict(changed=result.changed, plan=result.plan, notes=result.notes,
               before=result.before, after=result.after)
    if module._diff:
        out["diff"] = dict(before=_text(result.before), after=_text(result.after),
                           before_header="before", after_header="after (check mode: planned)"
                           if module.check_mode else "after")
    module.exit_json(**out)


def _text(state):
    # one line per value, so that Ansible's diff is a readable line diff
    return "".join(f"{key}: {json.dumps(value, sort_keys=True)}\n"
                   for key, value in sorted(state.items(), key=lambda kv: str(kv[0])))
