"""Where a transaction's journal lives, and whether a killed run left one: light enough for
the read commands, which only mention it (`pcimgr recover` deals with it)."""

from __future__ import annotations

import os

JOURNAL = "journal.json"


def journal_path(state_dir: str) -> str:
    return os.path.join(state_dir, JOURNAL)


def unfinished(state_dir: str) -> bool:
    """A journal is there: a run was killed before it finished or rolled back."""
    return os.path.lexists(journal_path(state_dir))
