"""The seam's snapshot machine: a host as `pcimgr snapshot` recorded it. Read commands see
its sysfs, device nodes, kernel files, udev names, definitions, facts and guests, and
nothing of the host pcimgr runs on; changes are refused."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pcimgr.host import trust
from pcimgr.host.readonly import ReadOnlyMachine
from pcimgr.host.snapshot import layout

if TYPE_CHECKING:
    from pcimgr.host.libvirt_adapter import Domain


class SnapshotMachine(ReadOnlyMachine):
    def __init__(self, root: str, source: str | None = None) -> None:
        """root: the unpacked snapshot (its manifest at the top); source: the file it came
        from, for messages (None: a directory given as the root, checked like a simulated
        host: yours or root's, written by nobody else)."""
        root = os.path.abspath(root)
        if source is None:
            trust.check(root, os.path.join(root, layout.MANIFEST), "the snapshot",
                        "`pcimgr snapshot FILE` on the host, then `--snapshot FILE`")
        self.manifest = layout.read_manifest(root)
        super().__init__(os.path.join(root, layout.SYS), os.path.join(root, layout.DEV),
                         os.path.join(root, layout.SYSTEM))
        self.snapshot_root = root
        self.source = source or root
        host = self.manifest["host"]
        self.kind = (f"a snapshot of {host.get('hostname') or 'a host'} taken "
                     f"{self.manifest.get('taken', '?')}")
        self.default_config_dir = os.path.join(root, layout.CONFIG)

    @cached_property
    def recorded(self) -> dict[str, Any] | None:
        recorded: dict[str, Any] = self.manifest["host"]
        return recorded if self.manifest.get("facts_known", True) else None

    def _recorded(self, key: str, default: Any) -> Any:
        # the kernel's own facts (modules, holders, cmdline) were read even where the
        # host facts were unknown
        return self.manifest["host"].get(key, default)

    def unknown_notice(self) -> str | None:
        if self.recorded is None:
            return (f"note: {self.source} was taken of a tree whose host facts were unknown: "
                    "addresses, routes, mounts and swaps are unknown")
        return None

    def refusal(self) -> str:
        return (f"refusing to change {self.source}: it is {self.kind}, which is read only; "
                "run the command on that host")

    def recorded_domains(self) -> list[Domain] | None:
        guests = self.manifest.get("guests")
        if guests is None:
            return None
        from pcimgr.host.libvirt_adapter import Domain
        return [Domain(g["name"], g["uuid"], g["active"], bool(g.get("persistent", True)),
                       g.get("live_xml"), g.get("config_xml")) for g in guests]
