"""Text from outside pcimgr reaches the terminal with its escape sequences shown, not run:
a udev database name, a definition file's field, a journal's command string."""

import json
from pathlib import Path

from pcimgr.core.terminal import safe

HOSTILE = "\x1b]0;PWNED\x07\x1b[2J"
NIC = "0000:04:00.0"
PF = "0000:05:00.0"


def test_safe_shows_controls_escapes_and_bidi_overrides() -> None:
    assert safe("a\x1b[2Jb\x07\x9b\x7f\u202ec") == "a\\x1b[2Jb\\x07\\x9b\\x7f\\u202ec"
    assert safe("one\nline\r\t") == "one\\x0aline\\x0d\\x09"
    assert safe("two\nlines\tkept\x1b", lines=True) == "two\nlines\tkept\\x1b"
    assert safe("Intel® Ethernet 82599 — ok \\x1b") == "Intel® Ethernet 82599 — ok \\x1b"


def _plant_udev_name(root: Path) -> None:
    data = root / "run/udev/data"
    data.mkdir(parents=True)
    (data / f"+pci:{NIC}").write_text(f"I:1\nE:ID_MODEL_FROM_DATABASE=NIC{HOSTILE}\n"
                                      f"E:ID_VENDOR_FROM_DATABASE=Vendor{HOSTILE}\n")


def test_list_and_show_print_a_udev_name_escaped(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    _plant_udev_name(demo_root)
    for args in (["list"], ["list", "--wide"], ["show", NIC], ["groups"]):
        r = run("--sysfs-root", demo_root, *args)
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.output and "\x07" not in r.output
        assert "NIC\\x1b]0;PWNED\\x07\\x1b[2J" in r.output
    # JSON stays JSON: the name whole, as json escapes it
    r = run("--sysfs-root", demo_root, "list", "--all", "--json")
    assert "\x1b" not in r.output
    assert {d["address"]: d for d in json.loads(r.output)}[NIC]["device"] == f"NIC{HOSTILE}"


def test_status_prints_a_definition_field_escaped(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("--sysfs-root", demo_root, "define", PF, "--vfs", "2").exit_code == 0
    f = demo_root / f".pcimgr-config/devices/{PF}.json"
    data = json.loads(f.read_text())
    f.write_text(json.dumps(data | {"vf_driver": None, "vfs": None,
                                    "driver": f"vfio-pci{HOSTILE}"}))
    r = run("--sysfs-root", demo_root, "status")
    assert PF in r.output
    assert "\x1b" not in r.output and "\x07" not in r.output


def test_history_prints_a_journal_command_escaped(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    state = demo_root / ".pcimgr-state"
    state.mkdir(exist_ok=True)
    (state / "history.json").write_text(json.dumps([{
        "time": "2026-12-07T05:00:00+0000", "command": f"bind{HOSTILE}\nforged line",
        "result": "done", "steps": [f"step{HOSTILE}"], "detail": HOSTILE}]))
    r = run("--sysfs-root", demo_root, "history")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\x07" not in r.output
    assert "\nforged line" not in r.output  # one change, one line
    assert "bind\\x1b]0;PWNED" in r.output



def test_doctor_prints_the_hosts_files_escaped(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    """The command line and grub's file are the host's: doctor, and the diff of
    doctor --fix --dry-run, show an escape in them instead of sending it."""
    marker = demo_root / ".pcimgr-simulated-host.json"
    data = json.loads(marker.read_text())
    data["host"]["cmdline"] = f"BOOT_IMAGE=/vmlinuz quiet{HOSTILE}"
    marker.write_text(json.dumps(data))
    grub = demo_root / "etc/default/grub"
    text = grub.read_text()
    start = text.index('GRUB_CMDLINE_LINUX_DEFAULT="')
    end = text.index("\n", start)
    grub.write_text(text[:start] + f'GRUB_CMDLINE_LINUX_DEFAULT="quiet{HOSTILE}"' + text[end:])
    for args in (["doctor"], ["doctor", "--fix", "--dry-run"]):
        r = run("--sysfs-root", demo_root, *args)
        assert "Traceback" not in r.output, r.output
        assert "\x1b" not in r.output and "\x07" not in r.output, args
    assert "quiet\\x1b]0;PWNED\\x07" in r.output  # the diff's line, shown


def _on_a_terminal(root: Path, *args: str, columns: int = 80) -> str:
    """pcimgr ARGS with its output on a pty COLUMNS wide, as a terminal shows it."""
    import os
    import pty
    import sys
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.environ.update(COLUMNS=str(columns), PYTHONPATH=str(Path(__file__).parent.parent))
        os.execv(sys.executable, [sys.executable, "-m", "pcimgr", "--sysfs-root", str(root),
                                  *args])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return out.decode().replace("\r", "")


def test_tables_and_checks_fit_an_80_column_terminal(demo_root: Path) -> None:
    """Issue 24: at 80 columns `list` was 134 wide and `doctor` 353."""
    for args in (["list"], ["list", "--all"], ["doctor"], ["list", "-o", "address,host-use"]):
        text = _on_a_terminal(demo_root, *args)
        assert max(len(line) for line in text.splitlines()) <= 80, (args, text)
    text = _on_a_terminal(demo_root, "list", "-o", "address,driver,host-use")
    assert text.splitlines()[0].split() == ["ADDRESS", "DRIVER", "HOST", "USE"]


def test_list_o_selects_fields_and_names_them_when_wrong(run, demo_root: Path) -> None:  # type: ignore[no-untyped-def]
    r = run("--sysfs-root", demo_root, "list", "-o", "driver,address")
    assert r.exit_code == 0 and r.output.splitlines()[1].split() == ["e1000e", "0000:00:1f.6"]
    r = run("--sysfs-root", demo_root, "list", "-o", "address,nope")
    assert r.exit_code == 2 and "the fields are address,device,driver" in r.output
