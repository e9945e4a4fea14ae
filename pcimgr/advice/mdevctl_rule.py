"""mdevctl's udev rule: does it start `--auto` mdevs when their parent appears, and
`doctor --fix`'s repair when it cannot (docs/mdev.md).

Debian 12's mdevctl 1.2.0 installs /usr/bin/mdevctl while its rule
(/lib/udev/rules.d/60-mdevctl.rules) runs /usr/sbin/mdevctl, so nothing starts (seen in
the lab). udev lets a file of the same name in /etc/udev/rules.d replace the package's: the
repair writes one there with the program's real path, and never edits the package's file
(an upgrade would put it back).
"""

from __future__ import annotations

import re

from pcimgr.advice.edits import Edit, Part, decode, shown
from pcimgr.host.machine import Machine

NAME = "60-mdevctl.rules"
OVERRIDE = f"etc/udev/rules.d/{NAME}"
# udev's precedence for files of one name: /etc, then /run, then the package's
PLACES = (OVERRIDE, f"run/udev/rules.d/{NAME}", f"usr/lib/udev/rules.d/{NAME}",
          f"lib/udev/rules.d/{NAME}")
_PROGRAM = re.compile(r"(/[\w./-]*/mdevctl)(?=\s)")
HEADER = ("# pcimgr doctor --fix: the package's {package}, running the mdevctl installed\n"
          "# ({program}, not {wrong}). Remove this file once the package's rule is right.\n")


class Finding:
    def __init__(self, rel: str, text: str, wrong: str, program: str | None) -> None:
        self.rel = rel          # the rule udev uses
        self.text = text
        self.wrong = wrong      # the program it runs, which is not there
        self.program = program  # where mdevctl is, if anywhere


def _exists(machine: Machine, path: str) -> bool:
    directory, _, name = path.lstrip("/").rpartition("/")
    return name in machine.list_system_dir(directory)


def effective(machine: Machine) -> tuple[str, str] | None:
    """The rule file udev uses and its text; None when there is none."""
    for rel in PLACES:
        data = machine.read_system_file(rel)
        if data is not None:
            return rel, decode(machine, rel, data, f"fix {shown(machine, rel)} by hand")
    return None


def broken(machine: Machine) -> Finding | None:
    found = effective(machine)
    if found is None:
        return None
    rel, text = found
    missing = sorted({p for p in _PROGRAM.findall(text) if not _exists(machine, p)})
    if not missing:
        return None
    return Finding(rel, text, missing[0], machine.find_program("mdevctl"))


def plan(machine: Machine) -> Part:
    part = Part()
    finding = broken(machine)
    if finding is None:
        return part
    where = shown(machine, OVERRIDE)
    if finding.program is None:
        part.lines.append(f"mdevctl's rule {shown(machine, finding.rel)} runs {finding.wrong}, "
                          "and no mdevctl is installed: left as it is (`pcimgr install-udev` "
                          "starts --auto mdevs without mdevctl)")
        return part
    body = finding.text
    if finding.rel == OVERRIDE and body.startswith("# pcimgr doctor --fix"):
        body = "".join(body.splitlines(keepends=True)[2:])  # our own header, rewritten below
    fixed = HEADER.format(package=NAME, program=finding.program, wrong=finding.wrong) + \
        body.replace(finding.wrong, finding.program)
    before = machine.read_system_file(OVERRIDE)
    part.edits.append(Edit(OVERRIDE, before, fixed.encode()))
    part.lines.append(f"mdev autostart: {where}: {'write' if before is None else 'rewrite'} "
                      f"(mdevctl's rule runs {finding.wrong}; mdevctl is {finding.program})")
    if machine.find_program("udevadm"):
        part.commands.append(["udevadm", "control", "--reload"])
    return part
