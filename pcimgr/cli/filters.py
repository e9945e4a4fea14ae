"""Which functions `pcimgr list` shows."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pcimgr.core.errors import BadInput
from pcimgr.core.model import PciDevice
from pcimgr.host.names import Namer

# PCI base classes by the names administrators use.
CLASS_NAMES = {
    "storage": 0x01, "net": 0x02, "network": 0x02, "display": 0x03, "gpu": 0x03,
    "multimedia": 0x04, "audio": 0x04, "memory": 0x05, "bridge": 0x06, "comm": 0x07,
    "system": 0x08, "input": 0x09, "serial": 0x0C, "usb": 0x0C, "accel": 0x12,
}

Predicate = Callable[[PciDevice], bool]


def class_filter(text: str) -> Predicate:
    """A class name (net, storage, ...) or a hex prefix of the 6-digit class code."""
    key = text.lower()
    if key in CLASS_NAMES:
        base = CLASS_NAMES[key]
        return lambda d: d.base_class == base
    digits = key.removeprefix("0x")
    if not digits or len(digits) > 6 or any(c not in "0123456789abcdef" for c in digits):
        raise BadInput(f"unknown class {text!r}; use one of {', '.join(sorted(CLASS_NAMES))} "
                       "or a hex class prefix such as 02 or 0200")
    return lambda d: f"{d.class_code:06x}".startswith(digits)


def vendor_filter(text: str, namer: Namer) -> Predicate:
    """A 4-digit hex vendor id, or part of the vendor's name."""
    key = text.lower().removeprefix("0x")
    if len(key) == 4 and all(c in "0123456789abcdef" for c in key):
        return lambda d: d.vendor_id == key
    if not key.strip():
        raise BadInput("empty --vendor; give a hex id such as 8086 or part of a name")
    return lambda d: key in (namer(d).vendor or "").lower()


def driver_filter(text: str) -> Predicate:
    """A driver name; "none" for functions without a driver."""
    if text.lower() == "none":
        return lambda d: d.driver is None
    if not text or "/" in text or text.strip() != text:
        raise BadInput(f"not a driver name: {text!r}")
    return lambda d: d.driver == text


def any_of(values: Iterable[str], make: Callable[[str], Predicate]) -> Predicate:
    """An option given several times or as a comma-separated list (`--driver igb,i40e`,
    `--driver igb --driver i40e`): a function matches when it matches one of the values."""
    words = [w.strip() for value in values for w in value.split(",")]
    if any(not w for w in words):
        raise BadInput(f"an empty value in {','.join(values)!r}; separate values with "
                       "single commas (igb,i40e)")
    chosen = [make(w) for w in words]
    return lambda d: any(p(d) for p in chosen)


def overridden(d: PciDevice) -> bool:
    """driver_override is set (what `driverctl list-overrides` shows)."""
    return d.driver_override is not None


def select(devices: Iterable[PciDevice], predicates: list[Predicate]) -> list[PciDevice]:
    return [d for d in devices if all(p(d) for p in predicates)]
