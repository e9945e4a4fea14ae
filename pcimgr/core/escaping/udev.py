"""udev rules: a value inside a key's double quotes (RUN, TEST, IMPORT{file}, ENV).

A rule value has no escape for `"` (it ends the value: what follows is parsed as further
keys, a RUN+= of its own), RUN splits its value into argv at whitespace and unquotes `'` and
`\\`, and a newline ends the rule. None of these can be carried, so they are refused. `%`
and `$` start substitutions (%k, $env{...}); `%%` and `$$` are udev's own escapes for them.
udev expands a TEST or IMPORT path into a buffer of 1024 bytes (UDEV_PATH_SIZE): longer
values would be cut, so a value is refused well before that, leaving room for the rest.
"""

from __future__ import annotations

import unicodedata

from pcimgr.core.escaping.refuse import refuse

LIMIT = 900  # bytes of a value, below UDEV_PATH_SIZE with the %k_$env{PCI_ID}.env tail


def value(text: str, what: str) -> str:
    """text as a udev rule value, or BadInput naming what it holds that udev cannot carry."""
    bad = sorted({c for c in text if not _carried(c)})
    if bad:
        raise refuse(what, text, "holds " + ", ".join(repr(c) for c in bad)
                     + ", which a udev rule cannot carry (quotes, backslashes, whitespace and "
                       "control characters)", "give a path without them")
    if len(text.encode()) > LIMIT:
        raise refuse(what, text, f"is longer than the {LIMIT} bytes a udev rule carries",
                     "give a shorter path")
    return text.replace("%", "%%").replace("$", "$$")


def _carried(c: str) -> bool:
    if c in "\"'\\":
        return False
    # Cc control, Cf format (bidi overrides), Cs surrogates, Z* separators (whitespace)
    return not unicodedata.category(c).startswith(("C", "Z"))
