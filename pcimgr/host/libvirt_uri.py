"""libvirt URIs as read commands need them without the binding: the default one, and
whether the system daemon listens (its sockets), known before libvirt is imported."""

from __future__ import annotations

import os

DEFAULT_URI = "qemu:///system"
# where a system daemon for DEFAULT_URI listens: libvirtd (or virtproxyd) and the
# modular virtqemud; socket activation creates them before any daemon runs
_SYSTEM_SOCKETS = tuple(f"{d}/{n}" for d in ("/run/libvirt", "/var/run/libvirt")
                        for n in ("libvirt-sock", "virtqemud-sock"))


def default_uri(explicit: str | None) -> str:
    return explicit or os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI


def absent_daemon(uri: str) -> str | None:
    """Why nothing can answer URI, known without importing the binding (its import is
    most of a small host's `list`): the default URI with none of its sockets. None for
    every other URI (remote, session daemons that start on demand, test:///)."""
    if uri != DEFAULT_URI or any(os.path.exists(p) for p in _SYSTEM_SOCKETS):
        return None
    return "no libvirt daemon listens (no /run/libvirt/libvirt-sock or virtqemud-sock)"
