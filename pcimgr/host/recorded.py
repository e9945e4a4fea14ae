"""Facts about a host's use of its devices that were written down rather than asked: a
simulated host's profile declares them, a snapshot recorded them on the host it was taken
on. Both keep them in the same shape (snapshot.md documents it)."""

from __future__ import annotations

from typing import Any

# the keys, and what each holds (the Facts protocol of host/machine.py)
KEYS = ("addresses", "routes", "mounts", "network_mounts", "swaps", "open_blocks",
        "routes_to")


class RecordedFacts:
    """Facts from a dict of the shape above."""

    known = True

    def __init__(self, declared: dict[str, Any]) -> None:
        self._f = declared

    @property
    def addresses(self) -> dict[str, list[str]]:
        return dict(self._f.get("addresses", {}))

    @property
    def routes(self) -> dict[str, list[str]]:
        return dict(self._f.get("routes", {}))

    @property
    def mounts(self) -> dict[str, str]:
        return dict(self._f.get("mounts", {}))

    @property
    def network_mounts(self) -> dict[str, str]:
        return dict(self._f.get("network_mounts", {}))

    @property
    def swaps(self) -> frozenset[str]:
        return frozenset(self._f.get("swaps", ()))

    @property
    def open_blocks(self) -> dict[str, list[str]]:
        return dict(self._f.get("open_blocks", {}))

    def route_to(self, server: str) -> str | None:
        found: str | None = self._f.get("routes_to", {}).get(server)
        return found


class UnknownFacts(RecordedFacts):
    """A tree that is neither this host's /sys, nor a simulated host, nor a snapshot: what
    it holds beyond sysfs was never recorded, and this host's own facts are not its."""

    known = False

    def __init__(self) -> None:
        super().__init__({})


def record(facts: Any, deep: bool) -> dict[str, Any]:
    """The facts of a host (any Facts) in the recorded shape, the route to every network
    mount's server among them; open blocks only when deep (a /proc scan)."""
    return {"addresses": facts.addresses, "routes": facts.routes, "mounts": facts.mounts,
            "network_mounts": facts.network_mounts, "swaps": sorted(facts.swaps),
            "open_blocks": facts.open_blocks if deep else {},
            "routes_to": {server: facts.route_to(server) for server in facts.network_mounts}}
