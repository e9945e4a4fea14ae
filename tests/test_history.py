"""pcimgr history: every change recorded with its steps and result (done, rolled back,
recovered), newest first; a damaged history never blocks a change; the Linux host tells
its system log."""

import errno
import json
import os
from pathlib import Path

from pcimgr.core.errors import KernelError
from pcimgr.host.sysfs import Sysfs
from tests.conftest import driver_of
from tests.killed import run_killed_after

PAIR = ("0000:04:00.0", "0000:04:00.1")


def history(run, root: Path) -> list[dict]:
    r = run("--sysfs-root", root, "history", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_changes_are_recorded_newest_first(run, demo_root: Path) -> None:
    assert run("--sysfs-root", demo_root, "history").output.startswith("No changes recorded")
    assert run("--sysfs-root", demo_root, "detach", "04:00.0", "--group").exit_code == 0
    assert run("--sysfs-root", demo_root, "rebind", *PAIR).exit_code == 0
    entries = history(run, demo_root)
    assert [(e["command"], e["result"]) for e in entries] == [
        (f"rebind {' '.join(PAIR)}", "done"), ("detach 0000:04:00.0", "done")]
    assert entries[1]["steps"] == [f"{a}: e1000e -> vfio-pci" for a in PAIR]
    text = run("--sysfs-root", demo_root, "history", "-n", "1").output
    assert "pcimgr rebind" in text and "detach" not in text


def test_a_rolled_back_change_is_recorded_with_why(run, demo_root: Path, mocker) -> None:
    real = Sysfs.write_attr
    calls = []

    def fail_third(self: Sysfs, rel: str, value: str) -> None:
        calls.append(rel)
        if len(calls) == 3:
            raise KernelError("injected", errno.EIO)
        real(self, rel, value)
    mocker.patch.object(Sysfs, "write_attr", fail_third)
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 7
    (entry,) = history(run, demo_root)
    assert entry["result"] == "rolled back" and "injected" in entry["detail"]
    assert [driver_of(demo_root, a) for a in PAIR] == ["e1000e", "e1000e"]


def test_a_killed_run_is_recorded_as_recovered(run, demo_root: Path) -> None:
    assert run_killed_after("drivers_probe", "--sysfs-root", str(demo_root), "detach",
                            "04:00.0", "--group") == 9
    assert run("--sysfs-root", demo_root, "rebind", *PAIR).exit_code == 0
    results = [(e["command"], e["result"]) for e in history(run, demo_root)]
    assert ("recover", "recovered") in results


def test_a_damaged_history_is_reported_and_never_blocks_a_change(run, demo_root: Path) -> None:
    state = demo_root / ".pcimgr-state"
    state.mkdir()
    (state / "history.json").write_text("{not json")
    r = run("--sysfs-root", demo_root, "history")
    assert r.exit_code == 11 and "history.json" in r.output and r.output.count("\n") == 1
    r = run("--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 0 and "not recorded" in r.output
    assert [driver_of(demo_root, a) for a in PAIR] == ["vfio-pci", "vfio-pci"]


def test_the_linux_host_tells_its_system_log(mocker) -> None:
    from pcimgr.host.linux import LinuxMachine
    logged = mocker.patch("syslog.syslog")
    LinuxMachine().system_log("detach 0000:04:00.0: done")
    assert logged.call_args.args[1] == "detach 0000:04:00.0: done"


def test_the_journal_gets_fields_to_select_on(tmp_path: Path, mocker) -> None:
    """Where journald listens, one datagram in its native protocol: the message and
    PCIMGR_* fields (journalctl PCIMGR_RESULT='rolled back'). A real socket receives it."""
    import socket

    from pcimgr.host.linux import LinuxMachine
    from pcimgr.plans import history
    from pcimgr.plans.transaction import Plan
    listening = tmp_path / "journal.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(listening))
        mocker.patch.object(LinuxMachine, "JOURNAL_SOCKET", str(listening))
        logged = mocker.patch("syslog.syslog")
        plan = Plan("detach 0000:04:00.0", ())
        history.add(LinuxMachine(), str(tmp_path / "state"), plan, "rolled back",
                    "step 2 failed:\nEBUSY")
        fields = dict(line.split("=", 1) for line in sock.recv(65536).decode().splitlines())
    assert fields["MESSAGE"] == "detach 0000:04:00.0: rolled back (step 2 failed: EBUSY)"
    assert fields["SYSLOG_IDENTIFIER"] == "pcimgr" and fields["PRIORITY"] == "5"
    assert fields["PCIMGR_COMMAND"] == "detach 0000:04:00.0"
    assert fields["PCIMGR_RESULT"] == "rolled back" and fields["PCIMGR_UID"] == str(os.getuid())
    assert not logged.called  # not twice
    # no journald: syslog
    mocker.patch.object(LinuxMachine, "JOURNAL_SOCKET", str(tmp_path / "none"))
    history.add(LinuxMachine(), str(tmp_path / "state"), plan, "done")
    assert logged.call_args.args[1] == "detach 0000:04:00.0: done"


def test_verbose_prints_each_write_as_it_happens(run, demo_root: Path) -> None:
    r = run("-v", "--sysfs-root", demo_root, "detach", "04:00.0", "--group")
    assert r.exit_code == 0
    writes = [line for line in r.output.splitlines() if line.startswith("pcimgr: echo")]
    pci = demo_root / "bus/pci"
    assert writes[:3] == [f"pcimgr: echo 'vfio-pci' > {pci}/devices/0000:04:00.0/driver_override",
                          f"pcimgr: echo '0000:04:00.0' > {pci}/drivers/e1000e/unbind",
                          f"pcimgr: echo '0000:04:00.0' > {pci}/drivers_probe"]
    assert len(writes) == 6
    r = run("--sysfs-root", demo_root, "rebind", *PAIR)
    assert "pcimgr: echo" not in r.output  # only with -v
