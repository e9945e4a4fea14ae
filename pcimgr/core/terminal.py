"""Text from outside pcimgr (udev's database, pci.ids, definition files, the journal, the
host's facts) made safe to print on a terminal: an escape sequence in a device name must
not retitle the window, clear the screen or reorder what the user reads.

Control characters (C0, DEL, C1, ESC among them) and the bidirectional overrides and
isolates are shown visibly, as Python writes them (\\x1b, \\u202e); a backslash is kept as
it is. Newlines and tabs are escaped too unless the text is allowed several lines.
JSON output does not come here: json.dumps escapes every control character itself.
"""

from __future__ import annotations

import re

# C0 but \t and \n (kept for multi-line text), DEL, C1; the bidi embeddings, overrides,
# isolates and marks (U+200E/F, U+061C, U+202A-E, U+2066-9)
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                     "\u2066-\u2069]")
_UNSAFE_LINE = re.compile(_UNSAFE.pattern[:-1] + "\t\n]")


def _shown(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe(text: object, lines: bool = False) -> str:
    """str(text) with every character a terminal would act on shown as an escape; lines:
    newlines and tabs kept (a block of text), else escaped too (one field, one line)."""
    return (_UNSAFE if lines else _UNSAFE_LINE).sub(_shown, str(text))
