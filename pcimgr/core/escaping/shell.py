"""POSIX shell (sh, bash): words and comments in the scripts pcimgr writes or prints."""

from __future__ import annotations

import shlex

from pcimgr.core.escaping.refuse import refuse, unencodable


def word(value: str, what: str) -> str:
    """One word the shell passes on unchanged: single quotes stop every expansion ($, `,
    globs, ;, newlines). NUL is the one byte an argument or a path cannot hold."""
    if "\0" in value or unencodable(value):
        raise refuse(what, value, "holds a NUL byte or bytes that are not UTF-8, which "
                     "pcimgr does not write into a command line", "give it without")
    return shlex.quote(value)


def comment(text: str) -> str:
    """Text for after `# `: a newline would end the comment and start a command, so every
    character outside printable ASCII is shown as a Python escape (comments only inform)."""
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode()
                   for c in text)
