"""Changes to the host's own files that `doctor --fix` makes, shown and made one way: a
unified diff for --dry-run; for a real run a backup of each file that existed
(FILE.pcimgr-bak: the file as it was before this run), an atomic write, then the commands
that regenerate what the files feed (update-grub, update-initramfs -u).

Everything is worked out, and every refusal raised, before the first write.
"""

from __future__ import annotations

import difflib
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from pcimgr.core.errors import PcimgrError, Refused, RolledBack
from pcimgr.host.machine import Machine

BACKUP = ".pcimgr-bak"


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


def apply(machine: Machine, edits: list[Edit], commands: list[list[str]],
          say: Callable[[str], None]) -> None:
    """Write the edits (a failure puts back those already written), then run the commands;
    a failing command leaves the files written and says what to run by hand."""
    done: list[Edit] = []
    try:
        for e in edits:
            if e.before is not None:
                machine.write_system_file(e.rel + BACKUP, e.before, 0o600)
            done.append(e)
            machine.write_system_file(e.rel, e.after, e.mode)
    except (OSError, PcimgrError) as err:
        why = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) else str(err)
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
        raise RolledBack(f"writing the boot files failed ({why}); rolled back: they are as "
                         "they were") from err
    for e in edits:
        path = shown(machine, e.rel)
        say(f"wrote {path}" + (f" (as it was: {path}{BACKUP})" if e.before is not None else ""))
    for argv in commands:
        machine.run_program(argv)
        say(f"ran: {shlex.join(argv)}")
