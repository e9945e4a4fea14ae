"""Changes to the host's own files that `doctor --fix` makes, shown and made one way: a
unified diff for --dry-run; for a real run a backup of each file that existed
(FILE.pcimgr-bak: the file as it was before this run), an atomic write, then the commands
that regenerate what the files feed (update-grub, update-initramfs -u).

Everything is worked out, and every refusal raised, before the first write.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from pcimgr.core.errors import PcimgrError, Refused, RolledBack
from pcimgr.host.machine import Machine
from pcimgr.plans import interrupts

BACKUP = ".pcimgr-bak"
_TMP = re.compile(r"\..+\.pcimgr-tmp\.[0-9]+")


@dataclass(frozen=True)
class Edit:
    rel: str                 # below the machine's system root: "etc/default/grub"
    before: bytes | None     # None: a new file
    after: bytes
    mode: int = 0o644        # for a new file; an existing one keeps its own


@dataclass
class Part:
    """One idea of the fix (the kernel command line, early claiming): what it finds, the
    files it changes and the commands to run once they are written."""

    lines: list[str] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)


def shown(machine: Machine, rel: str) -> str:
    """The path as the host names it (inside a simulated host: below its tree)."""
    return os.path.join(machine.system_root, rel)


def target(machine: Machine, rel: str) -> str:
    """The file an edit of rel changes: rel, or what its link points to when that is a
    regular file inside the system root owned by the root's owner (root on a real host),
    so the link stays a link; Refused in one line otherwise."""
    path = shown(machine, rel)
    if not os.path.islink(path):
        return rel
    real = os.path.realpath(path)
    top = os.path.realpath(machine.system_root)
    why = None
    if os.path.commonpath([real, top]) != top:
        why = f"outside {machine.system_root}"
    else:
        try:
            info = os.stat(real)
        except FileNotFoundError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            why = "which is not a regular file"
        elif info.st_uid != os.stat(top).st_uid:
            owner = "root" if top == "/" else f"the owner of {top}"
            why = f"which uid {info.st_uid} owns, not {owner}"
    if why is not None:
        raise Refused(f"cannot edit {path}: it is a link to {real}, {why}; edit the file "
                      "it should be by hand, or replace the link with that file")
    return os.path.relpath(real, top)


def decode(machine: Machine, rel: str, data: bytes, fix: str) -> str:
    """A text file pcimgr may edit; Refused (naming it and the fix) when it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise Refused(f"cannot edit {shown(machine, rel)}: it is not a text file pcimgr "
                      f"recognises; {fix}")
    return text


def diff(machine: Machine, edit: Edit) -> str:
    path = shown(machine, edit.rel)
    before = (edit.before or b"").decode("utf-8").splitlines(keepends=True)
    after = edit.after.decode("utf-8").splitlines(keepends=True)
    lines = difflib.unified_diff(before, after, "/dev/null" if edit.before is None else path,
                                 path, n=1)
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


def _sweep(machine: Machine, edits: list[Edit]) -> None:
    """Remove the temporaries a killed run left next to the files it edits (the machine's
    atomic write names them .NAME.pcimgr-tmp.PID; under the lock no other run writes)."""
    for directory in sorted({os.path.dirname(e.rel) for e in edits}):
        for name in machine.list_system_dir(directory):
            if _TMP.fullmatch(name):
                machine.remove_system_file(os.path.join(directory, name))


def _missing_dirs(machine: Machine, edits: list[Edit]) -> list[str]:
    """The directories the writes will make (a rollback removes them again), deepest first."""
    made = set()
    for e in edits:
        d = os.path.dirname(e.rel)
        while d and not os.path.isdir(shown(machine, d)):
            made.add(d)
            d = os.path.dirname(d)
    return sorted(made, key=lambda d: d.count("/"), reverse=True)


def apply(machine: Machine, edits: list[Edit], commands: list[list[str]],
          say: Callable[[str], None]) -> None:
    """Write the edits (a failure or Ctrl-C puts back those already written and removes
    the directories made for them), then run the commands; a failing command leaves the
    files written and says what to run by hand."""
    _sweep(machine, edits)
    made = _missing_dirs(machine, edits)
    done: list[Edit] = []
    try:
        for e in edits:
            if e.before is not None:
                machine.write_system_file(e.rel + BACKUP, e.before, 0o600)
            done.append(e)
            machine.write_system_file(e.rel, e.after, e.mode)
    except (OSError, PcimgrError) as err:  # Interrupted is one
        why = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) else str(err)
        with interrupts.shielded(deliver=False):  # a second Ctrl-C must not stop the undo
            _put_back(machine, done, made, why, err)
        raise RolledBack(f"writing the boot files failed ({why}); rolled back: they are as "
                         "they were") from err
    for e in edits:
        path = shown(machine, e.rel)
        say(f"wrote {path}" + (f" (as it was: {path}{BACKUP})" if e.before is not None else ""))
    for argv in commands:
        machine.run_program(argv)
        say(f"ran: {shlex.join(argv)}")


def _put_back(machine: Machine, done: list[Edit], made: list[str], why: str,
              err: BaseException) -> None:
    for e in reversed(done):
        try:
            if machine.read_system_file(e.rel) == e.before:
                continue  # its write failed before the rename: it is as it was
            if e.before is not None:
                machine.write_system_file(e.rel, e.before, e.mode)
            else:
                machine.remove_system_file(e.rel)
        except (OSError, PcimgrError):
            raise RolledBack(f"writing {shown(machine, e.rel)} failed ({why}) and it could "
                             "not be put back; its backup is "
                             f"{shown(machine, e.rel)}{BACKUP}") from err
    for d in made:
        try:
            os.rmdir(shown(machine, d))
        except OSError:
            pass  # not empty: something else was put there meanwhile
