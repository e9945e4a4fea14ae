"""oslo.config files (nova.conf): option values.

oslo.config substitutes `$name` and `${name}` in every value from other options (Nova
refuses to start on an unknown one); `$$` stands for `$`. A value is one line (a line that
starts with whitespace continues the previous value) and is stripped of surrounding
whitespace, so newlines, control characters and edge whitespace are refused.
"""

from __future__ import annotations

from pcimgr.core.escaping.refuse import refuse


def value(text: str, what: str) -> str:
    if any(not c.isprintable() for c in text) or text != text.strip():
        raise refuse(what, text, "holds line breaks, control characters or surrounding "
                     "whitespace, which an oslo.config value cannot carry", "give it without")
    return text.replace("$", "$$")
