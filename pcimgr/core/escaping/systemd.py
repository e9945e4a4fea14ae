"""systemd unit files: the words of an Exec*= command line.

systemd splits ExecStart= into words itself (no shell): a word in double quotes may hold
spaces, and `\\"`, `\\\\` and C escapes (`\\x1b`) inside it stand for themselves; `%` starts
a specifier (%I) and `$` an environment variable, `%%` and `$$` stand for the characters.
A NUL cannot be carried; a newline can, as `\\n`, but never raw (it ends the line).
The executable (the first word) is not an argument: `$` stays as written there, and systemd
refuses control characters, quotes and backslashes in it (string_is_safe: "Executable name
contains special characters").
"""

from __future__ import annotations

import re
import unicodedata

from pcimgr.core.escaping.refuse import refuse, unencodable

_PLAIN = re.compile(r"[A-Za-z0-9/_.:@+=,-]+")


def executable(path: str, what: str) -> str:
    """The program of an Exec*= line, run as exactly path."""
    if any(unicodedata.category(c) == "Cc" or c in "\"'\\" for c in path):
        raise refuse(what, path, "holds control characters, quotes or backslashes, which "
                     "systemd refuses in the program it runs", "give a path without them")
    return _quoted(_carried(path, what))


def word(text: str, what: str) -> str:
    """One argument of an Exec*= line that systemd passes on as exactly text."""
    return _quoted(_carried(text, what).replace("$", "$$"))


def _carried(text: str, what: str) -> str:
    if "\0" in text or unencodable(text):
        raise refuse(what, text, "holds a NUL byte or bytes that are not UTF-8, which "
                     "pcimgr does not write into a command line", "give it without")
    return text


def _quoted(text: str) -> str:
    text = text.replace("%", "%%")
    if _PLAIN.fullmatch(text):
        return text
    return '"' + "".join(_escaped(c) for c in text) + '"'


def _escaped(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    if c.isprintable():
        return c
    code = ord(c)  # systemd: \x is one byte, \U one character in UTF-8
    return f"\\x{code:02x}" if code < 0x80 else f"\\U{code:08x}"
