"""A libvirt guest as pcimgr reads it: its name, UUID, whether it runs and is persistent,
and its XML (live and persistent), from libvirt, a snapshot or the daemon's own files."""

from __future__ import annotations

from typing import NamedTuple


class Domain(NamedTuple):  # not a dataclass: read commands build it without the adapter
    name: str
    uuid: str
    active: bool
    persistent: bool
    live_xml: str | None     # while running
    config_xml: str | None   # when persistent
