"""The libvirt hook pcimgr installs: /etc/libvirt/hooks/qemu.d/pcimgr, an executable libvirt
(>= 6.5) runs at each of a QEMU guest's events as `pcimgr GUEST OPERATION SUB-OPERATION
EXTRA` with the domain XML on stdin. It is sh, so that the events and guests pcimgr has
nothing to do with cost a fork, not a Python start: only prepare and release of a guest
with a profile run pcimgr."""

from __future__ import annotations

import re

from pcimgr.core.escaping import shell

REL = "etc/libvirt/hooks/qemu.d/pcimgr"
MARK = "# pcimgr's libvirt hook"
# libvirt runs qemu.d/* since 6.5.0; before, only the single script hooks/qemu
FIRST_LIBVIRT = (6, 5, 0)


def text(pcimgr: str, config_dir: str, roots: tuple[str, ...] = ()) -> str:
    """roots: the global options naming the host's trees when they are not the defaults
    (--sysfs-root, --state-dir of a simulated host), passed on."""
    profiles = shell.word(f"{config_dir.rstrip('/')}/handoff/", "the configuration directory")
    options = "".join(f" {shell.word(w, 'an option')}" for w in roots)
    program = shell.word(pcimgr, "the pcimgr program")
    config = shell.word(config_dir, "the configuration directory")
    return f"""#!/bin/sh
{MARK} (`pcimgr hook install`; docs/handoff.md). It gives a guest with a hand-off
# profile (`pcimgr handoff list`) its devices when libvirt prepares it and gives them back
# when libvirt releases it. It never calls libvirt: libvirtd waits for it.
case "$2" in prepare|release) ;; *) exit 0 ;; esac
case "$1" in ''|.*|*/*) exit 0 ;; esac
[ -e {profiles}"$1".json ] || exit 0
exec {program}{options} --config-dir {config} hook qemu "$@"
"""


def is_ours(content: bytes | None) -> bool:
    return content is not None and MARK.encode() in content[:200]


def libvirt_version(version_text: str) -> tuple[int, ...] | None:
    """`libvirtd --version` ("libvirtd (libvirt) 9.0.0") as numbers."""
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", version_text)
    return tuple(int(g) for g in m.groups()) if m else None
