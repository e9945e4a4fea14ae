"""A change of several configuration files is all or nothing across a kill: a definition's
JSON and its udev env file, a group's definitions, a pool's record and its PF's
definition. Killed mid-way, readers see the files as they were, and the next run under
the lock (`recover` too) puts them back. The journal that makes it so is trusted only as
pcimgr writes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcimgr.core.errors import RolledBack
from pcimgr.persist import definitions
from pcimgr.plans import filechange, statefile
from tests.strace_faults import ENV

CFG = ".pcimgr-config"
PF = "0000:05:00.0"

# pcimgr in a child that dies (as kill -9) once it has written N files of the configuration
_KILLED = """
import os, sys
from pcimgr.plans import statefile
real, seen = statefile.write, []
def write(path, *args, **kwargs):
    real(path, *args, **kwargs)
    if "/.pcimgr-config/" in path and not path.endswith("pending-change.json"):
        seen.append(path)
        if len(seen) == int(sys.argv[1]):
            os._exit(9)
statefile.write = write
from pcimgr.cli.app import main
main(sys.argv[2:])
"""


def killed_after(n: int, root: Path, *argv: str) -> int:
    return subprocess.run([sys.executable, "-c", _KILLED, str(n), "--sysfs-root", str(root),
                           *argv], env=ENV, capture_output=True).returncode


def config(root: Path) -> dict[str, bytes]:
    base = root / CFG
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file()}


def test_a_killed_define_reads_as_before_and_recover_puts_it_back(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "define", "05:00.0", "--vfs", "2").exit_code == 0
    old = config(demo_root)
    # the new env file is written first, then the JSON: killed between them
    assert killed_after(1, demo_root, "define", "05:00.0", "--vfs", "4") == 9
    torn = config(demo_root)
    assert "pending-change.json" in torn and torn != old | {"pending-change.json":
                                                               torn["pending-change.json"]}
    r = run("--sysfs-root", demo_root, "status", "--json")
    assert json.loads(r.stdout)[0]["defined"] == "2 VF(s) on vfio-pci", r.output  # not 4
    r = run("--sysfs-root", demo_root, "recover")
    assert r.exit_code == 0
    assert "Put back 2 file(s) of an unfinished change of the definition of 0000:05:00.0" \
        in r.output
    assert config(demo_root) == old


def test_a_killed_group_define_is_undone_whole_by_the_next_change(run,
                                                                  demo_root: Path) -> None:
    assert killed_after(3, demo_root, "define", "04:00.0", "--driver", "vfio-pci",
                        "--group") == 9
    assert definitions.load_all(str(demo_root / CFG)) == ([], [])  # readers: nothing yet
    r = run("--sysfs-root", demo_root, "define", "05:00.0", "--vfs", "2")
    assert r.exit_code == 0 and "put back 4 file(s)" in r.output
    assert sorted(config(demo_root)) == ["devices/0000:05:00.0.json",
                                         "udev/0000:05:00.0_8086:10C9.env"]


def test_pool_record_and_definition_are_one_change(demo_root: Path, mocker) -> None:
    """A failure at the pool's record puts its PF's new definition back (pool define wrote
    them as two writes: the definition stayed without its pool)."""
    from pcimgr.guests import pools
    cfg = str(demo_root / CFG)
    d = definitions.Definition(PF, "8086", "10c9", "8086", "a03c", 7, vfs=2,
                               vf_driver="vfio-pci")
    record_path = pools.path(cfg, "tenants")
    real = statefile.write

    def full(path: str, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if path == record_path:
            raise OSError(28, "No space left on device", path)
        real(path, *args, **kwargs)

    mocker.patch("pcimgr.plans.statefile.write", side_effect=full)
    with pytest.raises(RolledBack, match="rolled back: the files are as they were"):
        definitions.save_all(cfg, [d], also=[(record_path, "{}")])
    assert config(demo_root) == {}


def test_hostile_journals_are_refused_in_one_line(run, demo_root: Path, tmp_path: Path) -> None:
    """A journal is a script for root: one pcimgr did not write is refused, whatever it
    names, and nothing outside the configuration directory is written."""
    cfg = demo_root / CFG
    cfg.mkdir()
    outside = tmp_path / "outside"
    outside.write_text("kept\n")
    journal = cfg / filechange.JOURNAL
    cases = {
        "a link": None,
        "readable by others": {"what": "x", "files": {}, "damaged": []},
        "a path out": {"what": "x", "files": {"../../outside": "owned\n"}, "damaged": []},
        "deep path": {"what": "x", "files": {"devices/a/b": "x"}, "damaged": []},
        "not text": {"what": "x", "files": {"devices/a.json": 3}, "damaged": []},
        "no damaged list": {"what": "x", "files": {}},
    }
    for name, content in cases.items():
        if journal.exists() or journal.is_symlink():
            journal.unlink()
        if content is None:
            journal.symlink_to(outside)
        else:
            journal.write_text(json.dumps(content))
            journal.chmod(0o644 if name == "readable by others" else 0o600)
        for argv in (["status"], ["recover"], ["define", "05:00.0", "--vfs", "2"]):
            r = run("--sysfs-root", demo_root, *argv)
            lines = r.output.strip().splitlines()
            assert r.exit_code == 11 and len(lines) == 1 and "pending-change.json" in lines[0] \
                and "Traceback" not in r.output, (name, argv, r.output)
        assert outside.read_text() == "kept\n"
        assert not (cfg / "devices").exists(), name


def test_the_reader_view_and_finish(tmp_path: Path) -> None:
    top = str(tmp_path / "cfg")
    a, b, c = (os.path.join(top, rel) for rel in ("devices/a.json", "udev/b.env",
                                                   "pools/c.json"))
    filechange.change(top, "the test files", [(a, "old a"), (b, "old b")])
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        real = statefile.write

        def die(path: str, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            real(path, *args, **kwargs)
            if path == c:
                os._exit(9)
        statefile.write = die  # type: ignore[assignment]
        filechange.change(top, "the test files", [(a, None), (c, "new c"), (b, "new b")])
        os._exit(0)
    assert os.waitpid(child, 0)[1] >> 8 == 9
    view = filechange.as_before(top)
    assert view == {a: "old a\n", b: "old b\n", c: None}
    assert filechange.names(top, "devices", view) == ["a.json"]
    assert filechange.names(top, "pools", view) == []
    assert statefile.names(top, "pools") == ["c.json"]  # on disk: the torn change
    assert filechange.finish(top) == ("put back 3 file(s) of an unfinished change of the "
                                      "test files (killed mid-way)")
    assert statefile.names(top, "devices") == ["a.json"]
    assert statefile.names(top, "pools") == []
    assert filechange.finish(top) is None and filechange.as_before(top) == {}


def test_a_damaged_file_replaced_by_a_change_is_not_put_back(tmp_path: Path) -> None:
    top = str(tmp_path / "cfg")
    p = os.path.join(top, "devices", "a.json")
    os.makedirs(os.path.dirname(p))
    os.symlink("/etc/passwd", p)  # read_text refuses it: Damaged
    filechange.change(top, "a", [(p, "new")])
    assert Path(p).read_text() == "new\n" and not os.path.islink(p)
    assert not os.path.exists(os.path.join(top, filechange.JOURNAL))
