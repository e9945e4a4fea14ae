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


def root_program(path: str) -> None:
    """Refused unless root may run PATH as root: it (and its script's interpreter) is root's,
    written by nobody else, and so is every directory above it but a sticky one."""
    import re
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
        with open(real, "rb") as f:
            first = f.readline(256)
    except OSError as e:
        raise Refused(f"refusing {path} as the hook's program: {e.strerror}; give the "
                      "installed pcimgr with --program") from None
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise Refused(f"refusing {path} as the hook's program: libvirtd runs it as root, and "
                      f"{real} is " + (f"uid {info.st_uid}'s" if info.st_uid else
                                       "writable by its group or others")
                      + "; install pcimgr as root (the Debian package: /usr/bin/pcimgr) and "
                      "give it with --program")
    below = real
    while below != "/":
        parent = os.path.dirname(below)
        up = os.stat(parent)
        if up.st_uid != 0 or (up.st_mode & 0o022 and not up.st_mode & stat.S_ISVTX):
            raise Refused(f"refusing {path} as the hook's program: the directory {parent} "
                          "above it is not root's alone, so another user could swap it; "
                          "install pcimgr where only root writes (/usr/bin)")
        below = parent
    m = re.match(rb"#!\s*(/\S+)", first)
    if m and os.path.realpath(m[1].decode(errors="replace")) != real:
        root_program(m[1].decode(errors="replace"))
