"""mdev definitions in mdevctl's own format and place: /etc/mdevctl.d/PARENT/UUID holding
`{"mdev_type": TYPE, "start": "auto"|"manual", "attrs": [{NAME: VALUE}, ...]}`, so that
mdevctl, libvirt's node devices and pcimgr read and write the same definitions.

Every file is read as a file pcimgr did not write: not through a link, a regular file of
bounded size, its names checked before they reach a path or a write (core/mdev.py); a file
that fails is reported in one line and never acted on.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from pcimgr.core.errors import BadInput, PcimgrError
from pcimgr.core.mdev import Definition, check_name, definition_from_json, is_uuid
from pcimgr.host.machine import Machine
from pcimgr.plans import statefile

DIR = "etc/mdevctl.d"
SCRIPTS = "scripts.d"  # mdevctl's callouts and notifiers, beside the parents' directories
FIX = "correct or remove it (`mdevctl list --defined` reads the same files)"


class Found(NamedTuple):
    definitions: list[Definition]
    problems: list[str]  # one line per file that is not a definition


def top(machine: Machine) -> str:
    return os.path.join(machine.system_root, DIR)


def path(machine: Machine, parent: str, uuid: str) -> str:
    return os.path.join(top(machine), parent, uuid)


def load_all(machine: Machine) -> Found:
    root = top(machine)
    found: list[Definition] = []
    problems: list[str] = []
    seen: set[str] = set()
    try:
        parents = statefile.names(root)
    except PcimgrError as e:  # the directory itself unusable: nothing is defined
        return Found([], [str(e)])
    for parent in parents:
        if parent == SCRIPTS:
            continue
        where = os.path.join(root, parent)
        try:
            check_name(parent, "parent")
            names = statefile.names(root, parent)
        except BadInput:
            problems.append(f"{where}: not a parent's name; {FIX}")
            continue
        except PcimgrError as e:  # a link or a file where a parent's directory should be
            problems.append(f"{where}: not a parent's directory ({e}); {FIX}")
            continue
        for name in names:
            if name.startswith(".") or ".tmp." in name:
                continue  # a writer's temporary file (swept under the lock)
            problem = _one(machine, root, parent, name, seen, found)
            if problem:
                problems.append(problem)
    return Found(found, problems)


def _one(machine: Machine, root: str, parent: str, name: str, seen: set[str],
         found: list[Definition]) -> str | None:
    """Read one file into found; what is wrong with it otherwise."""
    where = os.path.join(root, parent, name)
    if not is_uuid(name) or name != name.strip().lower():
        return f"{where}: not named by a UUID in lower case, as mdevctl writes them; {FIX}"
    if name in seen:
        return f"{where}: mdev {name} is defined under another parent too; {FIX}"
    try:
        text = statefile.read_text(where, FIX, root)
        if text is None:
            return None
        found.append(definition_from_json(name, parent, json.loads(text)))
        seen.add(name)
    except (ValueError, RecursionError) as e:  # JSON's errors; nesting past the stack
        return f"{where}: not valid JSON ({str(e)[:200] or type(e).__name__}); {FIX}"
    except BadInput as e:
        return f"{where}: {e}; {FIX}"
    except PcimgrError as e:  # a link, not a regular file, too large: it says so
        return str(e)
    return None


def sweep(machine: Machine) -> None:
    """Temporary files a killed `mdev define` left (under the lock, before a change)."""
    statefile.sweep_tree(top(machine))


def find(machine: Machine, uuid: str) -> Definition | None:
    return next((d for d in load_all(machine).definitions if d.uuid == uuid), None)


def write(machine: Machine, definition: Definition) -> None:
    # as mdevctl writes them (serde_json's pretty form), readable by everyone
    text = json.dumps(definition.to_json(), indent=2)
    statefile.write(path(machine, definition.parent, definition.uuid), text, mode=0o644,
                    top=top(machine))


def remove(machine: Machine, definition: Definition) -> None:
    statefile.remove(path(machine, definition.parent, definition.uuid), top=top(machine))
