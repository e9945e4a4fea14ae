"""The one-line refusal every escaping module gives for a value its format cannot carry."""

from __future__ import annotations

from pcimgr.core.errors import BadInput


def refuse(what: str, value: str, why: str, fix: str) -> BadInput:
    """what: where the value comes from (`--config-dir`, `the facts of node1: vendor_id`)."""
    return BadInput(f"{what} {shown(value)} {why}; {fix}")


def unencodable(value: str) -> bool:
    """Lone surrogates: bytes of a path that were not UTF-8 (os.fsdecode). Files pcimgr
    writes are UTF-8, so such a value cannot reach them as it is."""
    return any("\ud800" <= c <= "\udfff" for c in value)


def shown(value: str) -> str:
    """The value as Python writes a string literal, cut short: control characters, quotes
    and escapes visible in a one-line message, never acted on by a terminal."""
    text = repr(value[:80]) + ("..." if len(value) > 80 else "")
    return text.encode("ascii", "backslashreplace").decode()
