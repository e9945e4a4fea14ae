"""The habits of the tools administrators know (issue 14, part): bind/unbind several
functions as one transaction, `reattach` as virsh calls it, define/undefine dry runs,
NO_COLOR; list --overrides and several filter values, tables that fit the terminal,
xml --json, the read commands mentioning an unfinished transaction."""

import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from pcimgr.cli.app import cli
from pcimgr.core.errors import KernelError
from pcimgr.host.sysfs import Sysfs
from tests.conftest import driver_of, tree

PAIR = ("0000:04:00.0", "0000:04:00.1")


def test_bind_and_unbind_take_several_functions_as_one_transaction(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "bind", *PAIR, "pci-stub")
    assert r.exit_code == 0, r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["pci-stub", "pci-stub"]
    r = run("--sysfs-root", demo_root, "unbind", *PAIR)
    assert r.exit_code == 0, r.output
    assert [driver_of(demo_root, a) for a in PAIR] == [None, None]


def test_a_failure_on_the_second_function_takes_the_first_back(run, demo_root: Path,
                                                              mocker) -> None:
    real = Sysfs.write_attr

    def second_refused(self: Sysfs, rel: str, value: str) -> None:
        if rel == f"bus/pci/devices/{PAIR[1]}/driver_override":
            raise KernelError("injected", errno.EIO)
        real(self, rel, value)
    mocker.patch.object(Sysfs, "write_attr", second_refused)
    r = run("--sysfs-root", demo_root, "bind", *PAIR, "pci-stub")
    assert r.exit_code == 7 and "rolled back" in r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


def test_reattach_is_rebind(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0
    r = run("--sysfs-root", demo_root, "reattach", *PAIR)
    assert r.exit_code == 0, r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


def test_define_and_undefine_dry_runs_write_nothing(run, demo_root: Path) -> None:
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "define", "04:00.0", "--driver", "vfio-pci", "--group",
            "--dry-run")
    assert r.exit_code == 0 and r.output.count("Would define") == 2, r.output
    assert tree(demo_root) == before and not (demo_root / ".pcimgr-config").exists()
    r = run("--sysfs-root", demo_root, "define", "00:1f.6", "--driver", "vfio-pci", "--dry-run")
    assert r.exit_code == 4  # the same checks as for real
    assert run("--sysfs-root", demo_root, "define", "05:00.0", "--vfs", "2").exit_code == 0
    r = run("--sysfs-root", demo_root, "undefine", "05:00.0", "--dry-run")
    assert r.exit_code == 0 and "Would remove" in r.output
    assert (demo_root / ".pcimgr-config/devices/0000:05:00.0.json").exists()


def test_no_color_turns_colour_off(demo_root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    coloured = runner.invoke(cli, ["demo", "--keep", str(tmp_path / "a")], color=True)
    plain = runner.invoke(cli, ["demo", "--keep", str(tmp_path / "b")], color=True,
                          env={"NO_COLOR": "1"})
    assert "\x1b[" in coloured.output and "\x1b[" not in plain.output


def test_global_options_after_the_command(run, demo_root: Path) -> None:
    r = run("list", "--all", "--sysfs-root", demo_root, "--json")
    assert r.exit_code == 0 and '"0000:04:00.0"' in r.output
    r = run("vfs", "list", "05:00.0", f"--sysfs-root={demo_root}")
    assert r.exit_code == 0 and "82576" in r.output
    r = run("detach", "04:00.0", "--group", "-v", "--sysfs-root", demo_root)
    assert r.exit_code == 0 and "pcimgr: echo 'vfio-pci'" in r.output


def test_where_global_options_are_taken() -> None:
    from pcimgr.cli.app import globals_first
    assert globals_first(["list", "--sysfs-root", "/x", "--all"]) == [
        "--sysfs-root", "/x", "list", "--all"]
    assert globals_first(["-v", "vfs", "set", "05:00.0", "0", "--vlan", "5", "-c", "u"]) == [
        "-v", "-c", "u", "vfs", "set", "05:00.0", "0", "--vlan", "5"]
    assert globals_first(["xml", "--", "--sysfs-root"]) == ["xml", "--", "--sysfs-root"]
    assert globals_first(["--sysfs-root", "/x"]) == ["--sysfs-root", "/x"]


# -- list: overrides, several filter values, the terminal's width --------------------

def test_list_overrides_shows_only_overridden_functions_with_the_override(
        run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "list", "--overrides").stdout == \
        "No function has a driver_override.\n"
    assert run("--sysfs-root", demo_root, "bind", "06:00.0", "pci-stub").exit_code == 0
    assert run("--sysfs-root", demo_root, "detach", "01:00.0", "--group").exit_code == 0
    r = run("--sysfs-root", demo_root, "list", "--overrides")
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["ADDRESS", "DEVICE", "DRIVER", "OVERRIDE"]
    # every class (the GPU and its audio function are not network functions)
    assert [line.split()[0] for line in lines[1:]] == ["0000:01:00.0", "0000:01:00.1",
                                                       "0000:06:00.0"]
    assert "pci-stub  pci-stub" in lines[3] and "vfio-pci  vfio-pci" in lines[1]
    r = run("--sysfs-root", demo_root, "list", "--overrides", "--json")
    assert [(d["address"], d["driver_override"]) for d in json.loads(r.stdout)] == [
        ("0000:01:00.0", "vfio-pci"), ("0000:01:00.1", "vfio-pci"), ("0000:06:00.0", "pci-stub")]


def test_plain_list_marks_an_override_and_explains_it_on_stderr(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "list")
    assert "*" not in r.output
    assert run("--sysfs-root", demo_root, "bind", "06:00.0", "pci-stub").exit_code == 0
    r = run("--sysfs-root", demo_root, "list")
    row = next(line for line in r.stdout.splitlines() if line.startswith("0000:06:00.0"))
    assert " pci-stub* " in row
    assert " igb " in next(line for line in r.stdout.splitlines()
                           if line.startswith("0000:05:00.0"))
    assert r.stderr.startswith("pcimgr: note: * driver_override is set")
    assert "list --overrides" in r.stderr
    assert "*" not in run("--sysfs-root", demo_root, "list", "--json").stdout


def _addresses(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:]]


def test_filters_take_several_values_repeated_or_with_commas(run, demo_root: Path) -> None:
    want = ["0000:05:00.0", "0000:06:00.0"]
    assert _addresses(run("--sysfs-root", demo_root, "list", "--driver", "igb,i40e").stdout) \
        == want
    assert _addresses(run("--sysfs-root", demo_root, "list", "--driver", "igb", "--driver",
                          "i40e").stdout) == want
    r = run("--sysfs-root", demo_root, "list", "--class", "display,storage")
    assert _addresses(r.stdout) == ["0000:00:02.0", "0000:01:00.0", "0000:02:00.0"]
    r = run("--sysfs-root", demo_root, "list", "--class", "03", "--class", "01")
    assert _addresses(r.stdout) == ["0000:00:02.0", "0000:01:00.0", "0000:02:00.0"]
    r = run("--sysfs-root", demo_root, "list", "--vendor", "15b3,10de", "--all", "--json")
    assert {d["vendor_id"] for d in json.loads(r.stdout)} == {"15b3", "10de"}
    # several options still narrow each other: Mellanox functions on igb are none
    r = run("--sysfs-root", demo_root, "list", "--vendor", "mellanox", "--driver", "igb,mlx5_core")
    assert len(_addresses(r.stdout)) == 3
    r = run("--sysfs-root", demo_root, "list", "--driver", "igb,,i40e")
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "empty value" in r.output
    r = run("--sysfs-root", demo_root, "list", "--class", "net,bogus")
    assert r.exit_code == 2 and "unknown class 'bogus'" in r.output


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """stdout and stderr of the CLI runner are a terminal of that many columns."""
    from click import testing

    def make(columns: int) -> None:
        monkeypatch.setattr(testing._NamedTextIOWrapper, "isatty", lambda self: True,
                            raising=False)
        monkeypatch.setenv("COLUMNS", str(columns))
    return make


def test_list_fits_the_terminal_and_wide_prints_everything(run, demo_root: Path,
                                                         terminal: Callable[[int], None]) -> None:
    piped = run("--sysfs-root", demo_root, "list", "--all").stdout
    assert max(map(len, piped.splitlines())) > 120  # today's output, names cut at 44
    assert "Cannon Lake PCH PCI Express Root Port #17 [8086:a340]" in piped
    terminal(150)
    fitted = run("--sysfs-root", demo_root, "list", "--all").stdout
    assert max(map(len, fitted.splitlines())) == 150
    assert _addresses(fitted) == _addresses(piped)
    assert "Cannon Lake PCH PCI E… [8086:a340]" in fitted  # ids are never cut
    terminal(60)  # DEVICE gives way down to 12 characters of the name, then the line's end
    narrow = run("--sysfs-root", demo_root, "list", "--all").stdout
    assert "  MT27800 Fam… [15b3:1018]  " in narrow
    assert max(map(len, narrow.splitlines())) == 60 and narrow.splitlines()[1].endswith("…")
    wide = run("--sysfs-root", demo_root, "list", "--all", "--wide").stdout
    assert "82571EB/82571GB Gigabit Ethernet Controller D0/D1 (copper applications) " \
           "[8086:105e]" in wide
    terminal(400)  # room enough: the same as a pipe
    assert run("--sysfs-root", demo_root, "list", "--all").stdout == piped


# -- xml --json -----------------------------------------------------------------------

def test_xml_json_has_the_fields_and_the_xml(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "xml", "07:00.2", "--unmanaged", "--json")
    data = json.loads(r.stdout)
    assert data == {"element": "hostdev", "type": "pci", "mode": "subsystem", "managed": False,
                    "address": "0000:07:00.2", "domain": "0x0000", "bus": "0x07",
                    "slot": "0x00", "function": "0x2", "uuid": None, "net_mode": None, "mac": None,
                    "vlan": None,
                    "xml": run("--sysfs-root", demo_root, "xml", "07:00.2",
                               "--unmanaged").stdout.rstrip("\n")}
    r = run("--sysfs-root", demo_root, "xml", "07:00.3", "--interface", "--mac",
            "52:54:00:12:34:56", "--vlan", "42", "--json")
    data = json.loads(r.stdout)
    assert (data["element"], data["type"], data["managed"], data["mac"], data["vlan"]) == \
        ("interface", "hostdev", True, "52:54:00:12:34:56", 42)
    assert "<tag id=\"42\" />" in data["xml"]
    data = json.loads(run("xml", "--mode", "virtio", "--bridge", "br0", "--json").stdout)
    assert (data["type"], data["net_mode"], data["address"]) == ("bridge", "virtio", None)


# -- read commands mention a killed run's transaction ------------------------------------

def test_read_commands_mention_an_unfinished_transaction_on_stderr_only(
        run, demo_root: Path) -> None:
    from tests.killed import run_killed_after
    assert run("--sysfs-root", demo_root, "status").stderr == ""
    assert run_killed_after("unbind", "--sysfs-root", str(demo_root), "bind", "06:00.0",
                            "pci-stub") == 9
    reads = [("list",), ("list", "--json"), ("show", "06:00.0"), ("show", "06:00.0", "--json"),
             ("groups",), ("groups", "--json"), ("vfs", "list"), ("vfs", "list", "--json"),
             ("status",), ("status", "--json")]
    for args in reads:
        r = run("--sysfs-root", demo_root, *args)
        assert r.exit_code == 0, (args, r.output)
        assert [line for line in r.stderr.splitlines() if "unfinished" in line] == [
            line for line in r.stderr.splitlines() if "recover --dry-run" in line], args
        assert r.stderr.count("unfinished transaction") == 1, args
        assert "pcimgr recover --dry-run" in r.stderr
        assert "recover" not in r.stdout, args
        if "--json" in args:
            json.loads(r.stdout)
    assert run("--sysfs-root", demo_root, "recover").exit_code == 0
    assert run("--sysfs-root", demo_root, "list").stderr == ""


# -- detach/bind --save: now and at boot ----------------------------------------------

def test_detach_save_changes_now_and_defines_for_boot(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group", "--save")
    assert r.exit_code == 0, r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["vfio-pci", "vfio-pci"]
    assert "Defined 0000:04:00.1 (8086:105e, IOMMU group 5): driver vfio-pci" in r.stdout
    for a in PAIR:
        saved = json.loads((demo_root / f".pcimgr-config/devices/{a}.json").read_text())
        assert saved["driver"] == "vfio-pci"
    # what `define` would have written, byte for byte
    other = run("--sysfs-root", demo_root, "--config-dir", demo_root / "by-define", "define",
                "04:00.0", "--driver", "vfio-pci", "--group")
    assert other.exit_code == 0, other.output
    assert (demo_root / "by-define/devices/0000:04:00.0.json").read_bytes() == \
        (demo_root / ".pcimgr-config/devices/0000:04:00.0.json").read_bytes()
    r = run("--sysfs-root", demo_root, "status")
    assert r.exit_code == 0 and r.stdout.count(": ok") == 2


def test_bind_save_and_its_dry_run(run, demo_root: Path) -> None:
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "bind", "06:00.0", "pci-stub", "--save", "--dry-run")
    assert r.exit_code == 0 and "Would define 0000:06:00.0" in r.stdout, r.output
    assert r.stdout.index("Plan for") < r.stdout.index("Would define")
    assert tree(demo_root) == before and not (demo_root / ".pcimgr-config").exists()
    r = run("--sysfs-root", demo_root, "bind", "06:00.0", "pci-stub", "--save")
    assert r.exit_code == 0 and driver_of(demo_root, "0000:06:00.0") == "pci-stub"
    assert "Defined 0000:06:00.0 (8086:1572, IOMMU group 9): driver pci-stub" in r.stdout
    # already bound: nothing to change, but the definition is still written
    (demo_root / ".pcimgr-config/devices/0000:06:00.0.json").unlink()
    r = run("--sysfs-root", demo_root, "bind", "06:00.0", "pci-stub", "--save")
    assert r.exit_code == 0 and "Nothing to do." in r.stdout and "Defined" in r.stdout
    assert (demo_root / ".pcimgr-config/devices/0000:06:00.0.json").exists()


def test_save_refused_changes_nothing(run, demo_root: Path) -> None:
    before = tree(demo_root)
    # the group rule of a definition: detach alone would refuse too, so does --save first
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--save")
    assert r.exit_code == 4 and r.output.startswith("pcimgr: refusing")
    # --force moves a function the host uses now; a definition is never forced
    r = run("--sysfs-root", demo_root, "bind", "02:00.0", "pci-stub", "--save", "--force")
    assert r.exit_code == 4 and r.output.count("\n") == 1
    assert "refusing to define" in r.output
    assert tree(demo_root) == before and not (demo_root / ".pcimgr-config").exists()
    assert driver_of(demo_root, "0000:02:00.0") == "nvme"


# -- long waits say so on a terminal, every few seconds -----------------------------------

class FakeClock:
    """time.monotonic and time.sleep for a wait that takes seconds without taking them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_long_wait_for_the_lock_says_so_every_few_seconds_on_a_terminal(
        run, demo_root: Path, monkeypatch: pytest.MonkeyPatch,
        terminal: Callable[[int], None]) -> None:
    from pcimgr.host import waiting
    from pcimgr.plans import lock
    from pcimgr.sim.machine import SimulatedMachine
    clock = FakeClock()
    monkeypatch.setattr(lock, "time", clock)
    monkeypatch.setattr(waiting, "time", clock)
    monkeypatch.setattr(waiting, "_notice", None)  # put back whatever the runs set
    held = SimulatedMachine(str(demo_root)).lock_dir
    with lock.exclusive(held, 0):
        r = run("--sysfs-root", demo_root, "--lock-timeout", "10", "bind", "06:00.0", "pci-stub")
        assert r.exit_code == 8 and r.stdout == "", r.output
        assert "waiting" not in r.stderr  # a pipe: only the error
        terminal(100)
        r = run("--sysfs-root", demo_root, "--lock-timeout", "10", "bind", "06:00.0", "pci-stub")
    assert r.exit_code == 8
    lines = r.stderr.splitlines()
    assert [line.rsplit(" (", 1)[1] for line in lines[:-1]] == ["3 s)", "6 s)", "9 s)"]
    assert lines[0].startswith("pcimgr: waiting for another pcimgr to release ")
    assert lines[-1].startswith("pcimgr: another pcimgr is changing this host")
    assert driver_of(demo_root, "0000:06:00.0") == "i40e"


def test_a_kernel_wait_says_what_it_waits_for(demo_root: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from pcimgr.host import uevents, waiting
    from pcimgr.sim.machine import SimulatedMachine
    clock = FakeClock()
    monkeypatch.setattr(uevents, "time", clock)
    monkeypatch.setattr(waiting, "time", clock)
    monkeypatch.setattr(waiting, "_notice", None)
    said: list[str] = []
    waiting.notify_to(said.append)
    with uevents.Watcher(SimulatedMachine(str(demo_root))) as watcher:
        start = clock.now
        assert watcher.wait(lambda: clock.now >= start + 7, 30, "2 VF(s) of 05:00.0 to appear")
        assert not watcher.wait(lambda: False, 4, "nothing")
    assert said == ["waiting for 2 VF(s) of 05:00.0 to appear (3 s)",
                    "waiting for 2 VF(s) of 05:00.0 to appear (6 s)",
                    "waiting for nothing (3 s)"]
