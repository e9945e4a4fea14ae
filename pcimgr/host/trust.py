"""Whether a tree pcimgr did not make may decide what it believes: a simulated host or an
unpacked snapshot says which functions the host uses (its safety facts), and a simulated
host where writes go. Like ssh with ~/.ssh: taken only from its owner or root, and only
when nobody else may change it or swap it."""

from __future__ import annotations

import os
import shlex
import stat

from pcimgr.core.errors import Refused


def check(root: str, marker_path: str, what: str, make: str) -> None:
    """Refused unless ROOT and its marker file are yours or root's and written by nobody
    else, nor the directories above them. what: "the simulated host"; make: how to make
    one of your own ("`pcimgr sim create DIR`")."""
    for path, info in ((root, os.stat(root)), (marker_path, os.lstat(marker_path))):
        way_out = f"use one you made ({make})"
        if stat.S_ISLNK(info.st_mode):
            problem = "is a symbolic link"
        elif info.st_uid not in (0, os.geteuid()):
            # a tree unpacked by root keeps its maker's uid (tar's default for root)
            problem = f"belongs to uid {info.st_uid}, neither you nor root"
            way_out = (f"if you unpacked it and trust it, take it: `chown -R {os.geteuid()} "
                       f"{shlex.quote(root)}`; else {way_out}")
        elif info.st_mode & 0o022:
            problem = f"is writable by its group or others (`chmod go-w {path}`)"
        else:
            continue
        raise Refused(f"refusing {what} {root}: {path} {problem}; {way_out}")
    _check_ancestors(root, what, make)


def _check_ancestors(root: str, what: str, make: str) -> None:
    """ssh's rule for the directories above: one another user may write could have the tree
    swapped for theirs after the check. A sticky one (/tmp, /dev/shm) lets nobody move
    an entry they do not own, and the entry below it is checked as well."""
    below = os.path.realpath(root)
    while below != "/":
        parent = os.path.dirname(below)
        info = os.stat(parent)
        if info.st_uid not in (0, os.geteuid()):
            problem = f"belongs to uid {info.st_uid}, neither you nor root"
        elif info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            problem = f"is writable by its group or others (`chmod go-w {parent}`)"
        elif os.lstat(below).st_uid not in (0, os.geteuid()):
            problem = f"holds {below}, which belongs to uid {os.lstat(below).st_uid}"
        else:
            below = parent
            continue
        raise Refused(f"refusing {what} {root}: the directory above it {parent} "
                      f"{problem}; another user could swap the tree; make it elsewhere "
                      f"({make})")
