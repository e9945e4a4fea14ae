"""The documentation's examples are real output: every code block marked
`<!-- replay: PROFILE [--no-iommu] [with: SETUP] -->` in docs/*.md and README.md is replayed,
command by command, on a fresh simulated host of that profile (after SETUP: guests in a
real libvirtd, a killed run), and must print what the page shows.

After an intended change: PCIMGR_REGEN_DOCS=1 pytest tests/test_docs.py rewrites the
blocks' output; read `git diff docs` before committing it.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from pcimgr.cli.app import cli
from pcimgr.sim import builder, profiles

REPO = Path(__file__).parent.parent
PAGES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
MARKER = re.compile(r"^<!-- replay: ([\w:-]+)( --no-iommu)?(?: with: ([\w-]+))? -->$")
SHOWN_ROOT = "/tmp/demo-host"  # how the pages name the simulated host
SHOWN_SNAPSHOT = "/tmp/demo-host.tar.gz"  # and a snapshot of it


@dataclass
class Block:
    page: Path
    line: int           # of the opening fence
    index: int          # the how-manieth replayed block of its page
    profile: str
    iommu: bool
    text: list[str]     # the lines between the fences
    setup: str | None = None  # what the page says the host has before the block (SETUPS)


def blocks(pages: list[Path] = PAGES) -> list[Block]:
    found = []
    for page in pages:
        lines = page.read_text().splitlines()
        index = 0
        for n, line in enumerate(lines):
            m = MARKER.match(line)
            if m and n + 1 < len(lines) and lines[n + 1].startswith("```"):
                end = next(i for i in range(n + 2, len(lines)) if lines[i].startswith("```"))
                found.append(Block(page, n + 1, index, m[1], not m[2], lines[n + 2:end],
                                   m[3]))
                index += 1
    return found


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """(command line, the output the page shows) for each `$ ...` of a block; other
    commands than pcimgr (`cat` of a file it wrote) are shown as they are, not replayed."""
    found: list[tuple[str, list[str]]] = []
    for line in block.text:
        if line.startswith("$ "):
            found.append((line, []))
        elif found:
            found[-1][1].append(line)
    return found


def _guests(root: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Two stopped persistent domains, vm1 and vm2, in a real libvirtd (removed after)."""
    from tests import libvirtd
    uri = request.getfixturevalue("libvirt_uri")
    for name in ("vm1", "vm2"):
        libvirtd.define(name, False)
        request.addfinalizer(lambda name=name: (libvirtd.virsh("destroy", name),
                                                libvirtd.virsh("undefine", name)))
    return {"LIBVIRT_DEFAULT_URI": uri}


def _killed_detach(root: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """`detach 04:00.0 --group` killed (-9) after its fourth sysfs write: one step done,
    the next begun, the journal left."""
    script = f"""
import os
from pcimgr.host.sysfs import Sysfs
real, writes = Sysfs.write_attr, [0]
def write(self, rel, value):
    real(self, rel, value)
    writes[0] += 1
    if writes[0] == 4:
        os.kill(os.getpid(), 9)
Sysfs.write_attr = write
from pcimgr.cli.app import main
main(["--sysfs-root", {str(root)!r}, "detach", "04:00.0", "--group"])
"""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    return {}


SETUPS = {"guests": _guests, "killed-detach": _killed_detach}


def run(root: Path, line: str, env: dict[str, str] | None = None) -> str:
    args = shlex.split(line[2:], comments=True)[1:]
    if args[:1] == ["--sysfs-root"]:
        args = args[2:]
    snapshot = str(root.parent / "snapshot.tar.gz")
    args = [snapshot if a == SHOWN_SNAPSHOT else a for a in args]
    where = [] if "--snapshot" in args else ["--sysfs-root", str(root)]
    r = CliRunner().invoke(cli, [*where, *args], prog_name="pcimgr",
                           env={"COLUMNS": "200", "LIBVIRT_DEFAULT_URI": None, **(env or {})})
    return r.output.replace(snapshot, SHOWN_SNAPSHOT).replace(str(root), SHOWN_ROOT)


_WHEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([+-]\d{4}|Z)")


def _normal(lines: list[str]) -> list[str]:
    text = "\n".join(line.rstrip() for line in lines).strip("\n")
    return text.splitlines()


_PID = re.compile(r"\(pid \d+\)")


def _same(printed: list[str], shown: list[str]) -> bool:
    """Equal but for the time a change was made (history) and a killed run's pid."""
    def normal(lines: list[str]) -> list[str]:
        return [_PID.sub("(pid PID)", _WHEN.sub("TIME", x)) for x in lines]
    return normal(printed) == normal(shown)


@pytest.mark.parametrize("block", blocks(),
                         ids=lambda b: f"{b.page.name}:{b.line}")
def test_the_page_shows_what_pcimgr_prints(block: Block, tmp_path: Path,
                                          request: pytest.FixtureRequest) -> None:
    root = tmp_path / "host"
    builder.build(str(root), profiles.get(block.profile), iommu=block.iommu)
    env = SETUPS[block.setup](root, request) if block.setup else {}
    replayed: list[str] = []
    mismatches = []
    for line, shown in commands(block):
        if not line.startswith("$ pcimgr"):
            replayed += [line, *_normal(shown), ""]
            continue
        printed = _normal(run(root, line, env).splitlines())
        replayed += [line, *printed, ""]
        if not _same(printed, _normal(shown)):
            mismatches.append(f"{line}\n--- the page shows:\n" + "\n".join(shown)
                              + "\n--- pcimgr printed:\n" + "\n".join(printed))
    if mismatches and os.environ.get("PCIMGR_REGEN_DOCS"):
        # found again: blocks rewritten before this one may have moved it
        now = blocks([block.page])[block.index]
        lines = block.page.read_text().splitlines()
        lines[now.line + 1:now.line + 1 + len(now.text)] = replayed[:-1]
        block.page.write_text("\n".join(lines) + "\n")
        return
    assert not mismatches, f"{block.page.name}:{block.line}:\n" + "\n\n".join(mismatches)


def test_the_pages_have_replayed_examples() -> None:
    """The user guide's read commands, driver changes, VFs and definitions are replayed."""
    guide = [b for b in blocks() if b.page.name == "user-guide.md"]
    replayed = {words[2] if not words[2].startswith("-") else words[4]
                for b in guide for line, _ in commands(b)
                if line.startswith("$ pcimgr") and len(words := line.split()) > 2}
    assert {"list", "show", "groups", "xml", "detach", "rebind", "vfs", "define", "status",
            "apply", "doctor", "advise"} <= replayed


# README's "Everyday use" commands that need a libvirt domain (vm1, vm2) or its networks:
# the lab and tests/test_assign.py run them against a real libvirtd
NEEDS_LIBVIRT = ("assign", "release", "pool")
# their documented exit codes where the demo host has something to report
REPORTS = {"status": (0, 10), "doctor": (0, 10)}


def test_the_readme_s_everyday_commands_run_in_order_on_the_demo_host(tmp_path: Path) -> None:
    """Issue 24: every command the README lists, in its order, on the host it names
    (the demo profile): none refused, none in the wrong order."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("And around them:"):text.index("## ", text.index("And around them:"))]
    lines = [line.strip() for line in block.splitlines() if line.strip().startswith("pcimgr ")]
    assert len(lines) > 20
    root = tmp_path / "demo"
    builder.build(str(root), profiles.get("demo"))
    ran = 0
    for line in lines:
        args = shlex.split(line, comments=True)[1:]
        if args[0] in NEEDS_LIBVIRT or "--pool" in args:
            continue
        r = CliRunner().invoke(cli, ["--sysfs-root", str(root), *args], prog_name="pcimgr",
                               env={"COLUMNS": "200", "LIBVIRT_DEFAULT_URI": None})
        assert r.exit_code in REPORTS.get(args[0], (0,)), f"{line}: {r.output}"
        ran += 1
    assert ran >= 18


def test_the_man_page_examples_run_in_order_on_the_demo_host(tmp_path: Path) -> None:
    """The EXAMPLES section of the man page, as the README's: none refused on the demo."""
    page = (REPO / "man/pcimgr.8").read_text()
    start = page.index(".SH EXAMPLES")
    block = page[start:page.index(".SH", start + 4)]
    lines = [line.replace("\\-", "-") for line in block.splitlines()
             if line.startswith("pcimgr ")]
    assert len(lines) >= 8
    root = tmp_path / "demo"
    builder.build(str(root), profiles.get("demo"))
    for line in lines:
        for part in line.split(" && "):
            args = shlex.split(part)[1:]
            if args[0] in NEEDS_LIBVIRT:
                continue
            if args[:1] == ["sim"]:
                args[2] = str(tmp_path / "made")
            elif args[:1] == ["--sysfs-root"]:
                args[1] = str(tmp_path / "made")
            else:
                args = ["--sysfs-root", str(root), *args]
            r = CliRunner().invoke(cli, args, prog_name="pcimgr",
                                   env={"COLUMNS": "200", "LIBVIRT_DEFAULT_URI": None})
            assert r.exit_code in REPORTS.get(args[0], (0,)), f"{part}: {r.output}"
