"""Which guests hold which host PCI functions, from every domain's live and persistent XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pcimgr.core import hostdev_xml
from pcimgr.core.address import PciAddress
from pcimgr.core.domain import Domain

if TYPE_CHECKING:
    from pcimgr.host.libvirt_adapter import Libvirt


@dataclass(frozen=True)
class Holding:
    domain: str
    uuid: str
    running: bool               # the domain is running
    live_xml: str | None        # its element in the running guest, if there
    config_xml: str | None      # its element in the persistent configuration, if there

    @property
    def live(self) -> bool:
        return self.live_xml is not None

    @property
    def config(self) -> bool:
        return self.config_xml is not None

    @property
    def where(self) -> str:
        return " and ".join(w for w, on in (("running", self.live), ("persistent config",
                                                                      self.config)) if on)


Holdings = dict[PciAddress, list[Holding]]


def scan(lv: Libvirt) -> Holdings:
    return of_domains(lv.domains())


def of_domains(domains: list[Domain]) -> Holdings:
    """Holdings of domains already read (a snapshot's recorded guests)."""
    found: Holdings = {}
    for domain in domains:
        for address, holding in _holdings(domain).items():
            found.setdefault(address, []).append(holding)
    return found


def _holdings(domain: Domain) -> dict[PciAddress, Holding]:
    live = dict(hostdev_xml.pci_devices(domain.live_xml or ""))
    config = dict(hostdev_xml.pci_devices(domain.config_xml or ""))
    held = {}
    for address in sorted(set(live) | set(config)):
        held[address] = Holding(domain.name, domain.uuid, domain.active,
                                _text(live.get(address)), _text(config.get(address)))
    return held


def _text(element: ET.Element | None) -> str | None:
    return None if element is None else hostdev_xml.to_string(element)


def names(holdings: Holdings | None, address: PciAddress) -> list[str] | None:
    """Domain names holding the function; None when libvirt could not be asked."""
    if holdings is None:
        return None
    return sorted({h.domain for h in holdings.get(address, [])})
