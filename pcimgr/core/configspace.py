"""What a function's configuration space says about isolation, reset and its link (PCI
Express Base 6.0: 7.5.3 the PCIe capability, 7.7.11 ACS, 7.5.2 power management; the
Conventional PCI Advanced Features capability). Pure parsing of the bytes the kernel
exposes as `config`; no I/O.

Unprivileged readers get only the first 64 bytes (the header): everything here is then
unknown (None), never "absent"."""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = 64
CAP_PM, CAP_PCIE, CAP_AF = 0x01, 0x10, 0x13
EXT_CAP_ACS = 0x000D

# PCIe capability: Device/Port Type (bits 7:4 of the capabilities register)
PORT_TYPES = {0x0: "endpoint", 0x1: "legacy-endpoint", 0x4: "root-port", 0x5: "upstream-port",
              0x6: "downstream-port", 0x7: "pcie-to-pci-bridge", 0x8: "pci-to-pcie-bridge",
              0x9: "integrated-endpoint", 0xA: "event-collector"}
# Link speeds by the Supported/Current Link Speed encoding, in GT/s
SPEEDS = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}

# ACS capability/control bits
ACS_SV, ACS_TB, ACS_RR, ACS_CR, ACS_UF, ACS_EC, ACS_DT = 1, 2, 4, 8, 16, 32, 64
# What the kernel asks of a port or multifunction device to isolate what is below it
# (pci_acs_enabled with REQ_ACS_FLAGS in drivers/iommu/iommu.c)
ACS_REQUIRED = ACS_SV | ACS_RR | ACS_CR | ACS_UF
ACS_NAMES = {ACS_SV: "SrcValid", ACS_TB: "TransBlk", ACS_RR: "ReqRedir",
             ACS_CR: "CmpltRedir", ACS_UF: "UpstreamFwd", ACS_EC: "EgressCtrl",
             ACS_DT: "DirectTrans"}


@dataclass(frozen=True)
class Acs:
    capability: int
    control: int

    def missing(self, required: int = ACS_REQUIRED) -> list[str]:
        """The required controls that are off (those the port has are turned on by Linux
        when the IOMMU is on; one it lacks cannot be)."""
        return [name for bit, name in ACS_NAMES.items()
                if required & bit and not self.control & bit]


@dataclass(frozen=True)
class ConfigSpace:
    """The capabilities that matter for passthrough; None where the bytes were too few."""

    complete: bool                  # more than the header could be read (root)
    port_type: str | None           # PCIe Device/Port Type; None: conventional PCI
    flr: bool | None                # Function Level Reset (PCIe DevCap, or AF)
    pm_soft_reset: bool | None      # PM capability without No_Soft_Reset: D3hot->D0 resets
    acs: Acs | None                 # None: no ACS capability (or not readable)
    link_max: tuple[float, int] | None      # (GT/s, lanes) the function can do
    link_current: tuple[float, int] | None  # what the link trained at


def parse(data: bytes) -> ConfigSpace:
    complete = len(data) > HEADER
    caps = _capabilities(data) if complete else {}
    pcie = caps.get(CAP_PCIE)
    port_type = flr = link_max = link_current = None
    if pcie is not None and pcie + 0x14 <= len(data):
        flags, devcap = struct.unpack_from("<HI", data, pcie + 2)
        port_type = PORT_TYPES.get((flags >> 4) & 0xF, f"type {(flags >> 4) & 0xF}")
        flr = bool(devcap & (1 << 28))
        linkcap = struct.unpack_from("<I", data, pcie + 0x0C)[0]
        linksta = struct.unpack_from("<H", data, pcie + 0x12)[0]
        if linkcap & 0xF:
            link_max = (SPEEDS.get(linkcap & 0xF, 0.0), (linkcap >> 4) & 0x3F)
            link_current = (SPEEDS.get(linksta & 0xF, 0.0), (linksta >> 4) & 0x3F)
    af = caps.get(CAP_AF)
    if af is not None and af + 4 <= len(data):
        # AF capabilities: bit 1 FLR, bit 0 Transactions Pending
        flr = bool(flr) or bool(data[af + 3] & 0x02)
    elif complete and flr is None:
        flr = False
    pm = caps.get(CAP_PM)
    pm_soft_reset = None
    if pm is not None and pm + 6 <= len(data):
        pmcsr = struct.unpack_from("<H", data, pm + 4)[0]
        pm_soft_reset = not pmcsr & 0x08
    elif complete:
        pm_soft_reset = False
    acs = None
    at = _extended(data, EXT_CAP_ACS) if complete else None
    if at is not None and at + 8 <= len(data):
        capability, control = struct.unpack_from("<HH", data, at + 4)
        acs = Acs(capability, control)
    return ConfigSpace(complete, port_type, flr, pm_soft_reset, acs, link_max, link_current)


def _capabilities(data: bytes) -> dict[int, int]:
    """Standard capability id -> offset (the list from 0x34; loops and junk cut short)."""
    found: dict[int, int] = {}
    if len(data) < HEADER or not data[0x06] & 0x10:  # Status: Capabilities List
        return found
    at, seen = data[0x34] & 0xFC, 0
    while at >= 0x40 and at + 1 < len(data) and seen < 48:
        found.setdefault(data[at], at)
        at, seen = data[at + 1] & 0xFC, seen + 1
    return found


def _extended(data: bytes, wanted: int) -> int | None:
    """Offset of an extended capability (the list from 0x100), or None."""
    at, seen = 0x100, 0
    while at >= 0x100 and at + 4 <= len(data) and seen < 512:
        header = struct.unpack_from("<I", data, at)[0]
        if header in (0, 0xFFFFFFFF):
            return None
        if header & 0xFFFF == wanted:
            return at
        at, seen = (header >> 20) & 0xFFC, seen + 1
    return None


def speed_text(speed: float) -> str:
    return f"{speed:g} GT/s"
