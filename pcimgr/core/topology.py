"""The PCI tree as the kernel enumerated it, and the rules read off it: why functions share
an IOMMU group (ACS, multifunction devices, conventional PCI bridges), what a reset of a
function would hit, and which links trained below what both ends support. Pure rules over
a snapshot (host/topology.py reads it); no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from pcimgr.core.address import PciAddress
from pcimgr.core.configspace import ConfigSpace, speed_text

# resets that touch only the function itself (the kernel's reset_method names)
FUNCTION_LEVEL = ("device_specific", "acpi", "flr", "af_flr", "pm")
ACS_OVERRIDE = ("that out-of-tree kernel patch only pretends the ports isolate: devices "
                "below them can still reach each other's memory by peer-to-peer DMA, so a "
                "guest could read or corrupt the host's or another guest's data")


@dataclass(frozen=True)
class Link:
    speed: float   # GT/s
    width: int     # lanes

    def __str__(self) -> str:
        return f"{speed_text(self.speed)} x{self.width}"

    @classmethod
    def parse(cls, speed: str | None, width: str | None) -> Link | None:
        """The kernel's link files: "8.0 GT/s PCIe" and "4"; "Unknown" (an integrated
        endpoint) or anything else unreadable is no link."""
        try:
            gts = float((speed or "").split()[0])
            lanes = int(width or "")
        except (ValueError, IndexError):
            return None
        return cls(gts, lanes) if gts > 0 and 0 < lanes <= 32 else None


@dataclass(frozen=True)
class Node:
    address: PciAddress
    parent: PciAddress | None           # the upstream bridge; None on a root bus
    is_bridge: bool
    config: ConfigSpace
    reset_methods: tuple[str, ...] | None  # the kernel's reset_method; None: not readable
    link: Link | None                   # current
    link_max: Link | None


@dataclass(frozen=True)
class Reset:
    methods: tuple[str, ...]
    function_level: bool                # some method resets this function alone
    bus_collateral: tuple[PciAddress, ...]  # what a reset of its bus would also reset

    @property
    def only_bus(self) -> bool:
        """Nothing but a bus reset can reset it (libvirt falls back to one)."""
        return not self.function_level


@dataclass(frozen=True)
class Topology:
    nodes: dict[PciAddress, Node]
    _children: dict[PciAddress | None, list[PciAddress]] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        children: dict[PciAddress | None, list[PciAddress]] = {}
        for a in sorted(self.nodes):
            parent = self.nodes[a].parent
            # a bridge the bus does not list (no bus/pci/devices link: seen in captures of
            # real servers) does not take what is behind it out of the tree
            children.setdefault(parent if parent in self.nodes else None, []).append(a)
        object.__setattr__(self, "_children", children)

    def children(self, address: PciAddress | None) -> list[PciAddress]:
        return self._children.get(address, [])

    @cached_property
    def roots(self) -> list[PciAddress]:
        return self.children(None)

    def below(self, bridge: PciAddress) -> list[PciAddress]:
        """Every function behind a bridge, at any depth."""
        found: list[PciAddress] = []
        for child in self.children(bridge):
            found.append(child)
            found += self.below(child)
        return found

    def upstream(self, address: PciAddress) -> list[PciAddress]:
        """The bridges from the function up to the root bus, nearest first."""
        path, node = [], self.nodes.get(address)
        while node is not None and node.parent is not None:
            path.append(node.parent)
            node = self.nodes.get(node.parent)
        return path

    # -- reset -----------------------------------------------------------------

    def reset(self, address: PciAddress) -> Reset:
        node = self.nodes[address]
        methods = node.reset_methods or ()
        collateral: tuple[PciAddress, ...] = ()
        if node.parent is not None:
            # a secondary bus reset of the parent resets everything behind it
            collateral = tuple(a for a in self.below(node.parent) if a != address)
        return Reset(methods, any(m in FUNCTION_LEVEL for m in methods), collateral)

    # -- links -------------------------------------------------------------------

    def degraded(self, address: PciAddress) -> str | None:
        """The link to this function trained below what both ends support, or None. A
        port's own files describe the link to its child: judged there, not here."""
        node = self.nodes[address]
        if node.link is None or node.link_max is None or node.config.port_type in (
                "root-port", "downstream-port"):
            return None
        best_speed, best_width = node.link_max.speed, node.link_max.width
        parent = self.nodes.get(node.parent) if node.parent else None
        if node.parent is not None and (parent is None or parent.link_max is None):
            return None  # the other end's maximum was never read: nothing to judge against
        if parent is not None and parent.link_max is not None:
            best_speed = min(best_speed, parent.link_max.speed)
            best_width = min(best_width, parent.link_max.width)
        if node.link.speed < best_speed or node.link.width < best_width:
            return (f"link at {node.link}, both ends support "
                    f"{speed_text(best_speed)} x{best_width}")
        return None

    # -- isolation ---------------------------------------------------------------

    def why_shared(self, members: list[PciAddress], short: bool = False) -> list[str]:
        """Why these functions are one IOMMU group, culprits first, then the way out; the
        kernel's reasoning (pci_device_group in drivers/iommu/iommu.c): a function is
        isolated from what is beside it only when every port above it, and its own
        multifunction device, has ACS with Source Validation, Request and Completion
        Redirect and Upstream Forwarding enabled, and no conventional PCI bridge is
        above it (requests from behind one carry the bridge's ID). short: the culprits in a
        few words each, without the way out (doctor's one line)."""
        if len(members) < 2:
            return []
        if any(a in self.nodes and not self.nodes[a].config.complete for a in members):
            return ["ACS is beyond the first 64 bytes of configuration space, which only "
                    "root may read: run as root to see why"]
        group = set(members)
        reasons: dict[str, str] = {}  # one line per culprit, in the order found
        for a in sorted(members):
            for key, reason, brief in self._culprits(a, group):
                reasons.setdefault(key, brief if short else reason)
        if short:
            return list(reasons.values()) or ["a platform quirk or the firmware's tables"]
        found = list(reasons.values()) or [
            "nothing in the configuration space explains it: the platform put them together "
            "(a kernel quirk, or the firmware's DMAR/IVRS tables)"]
        return [*found,
                "way out: a slot behind a port with ACS (a root port or switch downstream "
                "port that isolates), or give the whole group to one guest",
                f"not pcie_acs_override: {ACS_OVERRIDE}"]

    def _culprits(self, address: PciAddress,
                  group: set[PciAddress]) -> list[tuple[str, str, str]]:
        node = self.nodes.get(address)
        if node is None:
            return []
        found = []
        device = [m for m in self.children(node.parent) if m in group and
                  (m.domain, m.bus, m.slot) == (address.domain, address.bus, address.slot)]
        if len(device) > 1 and not node.is_bridge and not all(
                _isolates(self.nodes[m].config) for m in device):
            first = device[0]
            found.append((f"mf {first.domain}:{first.bus}:{first.slot}",
                          f"{', '.join(str(m) for m in device)} are functions of one "
                          "multifunction device without ACS: they can reach each other",
                          "a multifunction device without ACS"))
        for bridge in self.upstream(address):
            b = self.nodes.get(bridge)
            if b is None:
                continue
            kind = b.config.port_type
            if kind in ("pcie-to-pci-bridge", None):
                found.append((str(bridge), f"{bridge} is a conventional PCI bridge "
                              "(PCIe-to-PCI): what is behind it reaches the IOMMU with the "
                              "bridge's ID, so the bridge and its devices are one group",
                              f"behind the PCIe-to-PCI bridge {bridge}"))
                break
            if kind in ("root-port", "downstream-port") and not _isolates(b.config):
                missing = ("no ACS capability" if b.config.acs is None else
                           "ACS without " + ", ".join(b.config.acs.missing()))
                found.append((str(bridge), f"{bridge} ({kind}) has {missing}: the functions "
                              "below it are not isolated from it or from each other",
                              f"{kind} {bridge} without ACS"))
                break
        return found


def _isolates(config: ConfigSpace) -> bool:
    return config.acs is not None and not config.acs.missing()
