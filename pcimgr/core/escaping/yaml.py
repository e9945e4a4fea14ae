"""YAML (Kubernetes manifests): scalars and literal blocks.

A plain scalar is written only when it is a name no YAML reader takes for something else;
anything else is double-quoted with every character outside printable ASCII as an escape
(\\x, \\u, \\U), so a newline, a quote or a `#` stays inside the value and no second key or
document starts. A literal block (`|`) has no escapes: it takes printable ASCII only.
"""

from __future__ import annotations

import re

from pcimgr.core.escaping.refuse import refuse

_PLAIN = re.compile(r"[a-z][a-z0-9.-]*")
# words YAML 1.1 readers (PyYAML, old Go yaml) take for booleans or null
_SPECIAL = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def scalar(text: str) -> str:
    if _PLAIN.fullmatch(text) and text not in _SPECIAL:
        return text
    return '"' + "".join(_escaped(c) for c in text) + '"'


def _escaped(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    if " " <= c <= "~":
        return c
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else (
        f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def literal(text: str, indent: int, what: str) -> str:
    """text as the lines of a block scalar indented by indent spaces."""
    lines = text.splitlines()
    if any(not " " <= c <= "~" for line in lines for c in line) or (
            lines and lines[0].startswith(" ")):
        raise refuse(what, text, "holds characters a YAML literal block cannot carry",
                     "give printable ASCII")
    return "".join(f"{' ' * indent}{line}\n" for line in lines)
