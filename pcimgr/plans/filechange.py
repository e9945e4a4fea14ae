"""Several files below one directory changed as one: all or nothing, across a kill.

Before the first file changes, JOURNAL (at the top of the directory, mode 0600) records
what each file held: its text, or that it did not exist. Then the files change, each
written whole (statefile), and the journal goes: that removal is the commit point. A
failure on the way (a full disk, Ctrl-C) puts the files back at once. After SIGKILL the
journal stays: the next run under the host's lock puts them back (finish), and a reader
that comes first reads them as they were (as_before). Used for the configuration:
definition files, their udev env files and pool records.

The journal is checked as the transaction journal is (root's or the caller's, 0600, not
a link, the shape pcimgr writes), and names only files below the directory it is in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from pcimgr.core.errors import Damaged, NeedsRoot, PcimgrError, RolledBack
from pcimgr.plans import interrupts, statefile

T = TypeVar("T")
JOURNAL = "pending-change.json"
Changes = list[tuple[str, str | None]]  # (path below top, new text or None: removed)


def change(top: str, what: str, changes: Changes, mode: int = 0o644) -> None:
    """Write (text) or remove (None) each file in order, as one change; on a failure put
    back those already changed and say so in one line (RolledBack naming WHAT)."""
    before: dict[str, str | None] = {}
    damaged = []
    for p, _ in changes:
        rel = _rel(top, p)
        if rel not in before:
            try:
                before[rel] = statefile.read_text(p, "", top=top)
            except Damaged:  # removed or replaced as asked: nothing worth putting back
                damaged.append(rel)
                before[rel] = None
    with statefile.directory(top, create=True, mode=0o755 if mode & 0o044 else 0o700):
        pass  # made as the files need it, not as the journal (0600) would
    journal = {"what": what, "files": before, "damaged": damaged}
    before = {rel: text for rel, text in before.items() if rel not in damaged}
    try:
        statefile.write(_journal(top), journal, readable=False, top=top)
        for p, text in changes:
            if text is None:
                statefile.remove(p, top=top)
            else:
                statefile.write(p, text, mode=mode, top=top)
        statefile.remove(_journal(top), top=top)
    except (OSError, PcimgrError) as e:
        with interrupts.shielded(deliver=False):
            try:
                _put_back(top, before, mode)
            except (OSError, PcimgrError):
                raise RolledBack(f"changing {what} failed ({_why(e)}) and the files could "
                                 f"not all be put back; `pcimgr recover` puts them back"
                                 ) from e
        if isinstance(e, NeedsRoot):
            raise
        raise RolledBack(f"changing {what} failed ({_why(e)}); rolled back: the files are "
                         "as they were") from e
    except BaseException:  # Ctrl-C: the signal goes on once the files are as they were
        with interrupts.shielded(deliver=False):
            _put_back(top, before, mode)
        raise


def finish(top: str, mode: int = 0o644) -> str | None:
    """Under the host's lock: put back the files of a change a killed run left; what was
    done, for the run to say, or None."""
    journal = _read(top)
    if journal is None:
        return None
    what, files = journal
    _put_back(top, files, mode)
    return f"put back {len(files)} file(s) of an unfinished change of {what} (killed mid-way)"


def as_before(top: str) -> dict[str, str | None]:
    """The files a killed change left, as they were before it (path -> text or None):
    what a reader uses until `finish` runs."""
    journal = _read(top)
    return {} if journal is None else {os.path.join(top, rel): text
                                       for rel, text in journal[1].items()}


def load(top: str, p: str, shape: Callable[[Any], T], fix: str,
         view: dict[str, str | None] | None = None) -> T | None:
    """statefile.load of P as it was before a killed change (view: as_before(top), read
    once for many files)."""
    view = as_before(top) if view is None else view
    if p in view:
        text = view[p]
        return None if text is None else statefile.parse(p, text, shape, fix)
    return statefile.load(p, shape, fix, top=top)


def names(top: str, rel: str, view: dict[str, str | None]) -> list[str]:
    """statefile.names of TOP/REL as it was before a killed change."""
    here = os.path.join(top, rel)
    found = set(statefile.names(top, rel))
    for p, text in view.items():
        if os.path.dirname(p) == here:
            (found.discard if text is None else found.add)(os.path.basename(p))
    return sorted(found)


def _put_back(top: str, files: dict[str, str | None], mode: int) -> None:
    """Each file as it was, touching only those that differ (on a full disk, a rewrite of
    an unchanged file could be the one that fails)."""
    for rel, text in files.items():
        p = os.path.join(top, rel)
        try:
            now = statefile.read_text(p, "", top=top)
        except Damaged:
            now = "\0"  # not what it was, whatever it was
        if now == text:
            continue
        if text is None:
            statefile.remove(p, top=top)
        else:
            statefile.write(p, text, mode=mode, top=top)
    statefile.remove(_journal(top), top=top)


def _read(top: str) -> tuple[str, dict[str, str | None]] | None:
    why = statefile.untrusted(top, JOURNAL)
    if why:
        raise Damaged(f"refusing {_journal(top)}: {why}; {_FIX}")
    return statefile.load(_journal(top), _shape, _FIX, top=top)


_FIX = ("check the files below it by hand, then remove it (it records what an interrupted "
        "change replaced)")


def _shape(data: Any) -> tuple[str, dict[str, str | None]]:
    statefile.obj(data, what=str, files=dict, damaged=list)
    files = {rel: text for rel, text in data["files"].items() if rel not in data["damaged"]}
    for rel, text in files.items():
        parts = rel.split("/")
        if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) \
                or len(parts) > 2:
            raise ValueError(f"it names {rel!r}, not a file below its directory")
        if not (text is None or isinstance(text, str)):
            raise ValueError(f"the entry for {rel} is not text")
    return data["what"], files


def _journal(top: str) -> str:
    return os.path.join(top, JOURNAL)


def _rel(top: str, p: str) -> str:
    rel = os.path.relpath(p, top)
    if rel.startswith(".."):
        raise ValueError(f"{p} is not below {top}")
    return rel


def _why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return str(e)
