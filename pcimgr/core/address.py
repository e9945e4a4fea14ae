"""PCI addresses: the one type every layer uses, parsed strictly before any I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pcimgr.core.errors import BadInput

_BDF = re.compile(
    r"(?:(?P<domain>[0-9a-f]{1,8}):)?(?P<bus>[0-9a-f]{2}):(?P<slot>[0-9a-f]{2})\.(?P<function>[0-9a-f])",
    re.IGNORECASE,
)
_NODEDEV = re.compile(
    r"pci_(?P<domain>[0-9a-f]{4,8})_(?P<bus>[0-9a-f]{2})_(?P<slot>[0-9a-f]{2})_(?P<function>[0-9a-f])",
    re.IGNORECASE,
)

_PARSED: dict[str, PciAddress] = {}

ACCEPTED_FORMS = "04:00.0, 0000:04:00.0 or pci_0000_04_00_0"


@dataclass(frozen=True, order=True)
class PciAddress:
    domain: int
    bus: int
    slot: int
    function: int

    def __post_init__(self) -> None:
        if not (0 <= self.domain <= 0xFFFFFFFF and 0 <= self.bus <= 0xFF
                and 0 <= self.slot <= 0x1F and 0 <= self.function <= 7):
            raise BadInput(f"PCI address out of range: {self.domain:x}:{self.bus:x}:"
                           f"{self.slot:x}.{self.function:x} (slot <= 1f, function <= 7)")

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        cached = _PARSED.get(text)
        if cached is not None:
            return cached
        address = cls._parse(text)
        if len(_PARSED) < 65536:  # discovery parses each VF's physfn link again and again
            _PARSED[text] = address
        return address

    @classmethod
    def _parse(cls, text: str) -> PciAddress:
        m = _BDF.fullmatch(text) or _NODEDEV.fullmatch(text)
        if m is None:
            raise BadInput(f"not a PCI address: {text!r}; use {ACCEPTED_FORMS}")
        slot, function = int(m["slot"], 16), int(m["function"], 16)
        if slot > 0x1F or function > 7:
            raise BadInput(f"not a PCI address: {text!r}: slot must be 00-1f and "
                           f"function 0-7; use {ACCEPTED_FORMS}")
        return cls(int(m["domain"] or "0", 16), int(m["bus"], 16), slot, function)

    @classmethod
    def from_routing_id(cls, domain: int, rid: int) -> PciAddress:
        """Address of a 16-bit requester ID (bus << 8 | devfn), as SR-IOV offsets use."""
        return cls(domain, (rid >> 8) & 0xFF, (rid >> 3) & 0x1F, rid & 7)

    @property
    def routing_id(self) -> int:
        return self.bus << 8 | self.slot << 3 | self.function

    def __str__(self) -> str:
        # kept once made: `list --json` prints each function's address and its PF's,
        # and parse() hands out one object per address
        text: str | None = self.__dict__.get("_text")
        if text is None:
            text = f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"
            object.__setattr__(self, "_text", text)
        return text

    @property
    def nodedev_name(self) -> str:
        return f"pci_{self.domain:04x}_{self.bus:02x}_{self.slot:02x}_{self.function:x}"

    @property
    def short(self) -> str:
        """lspci's form: the domain is left out when it is 0."""
        return str(self) if self.domain else str(self)[5:]
