"""The simulated kernel's reaction to one write is all or nothing, as a real kernel's store is
for the writer: a full disk (ENOSPC from strace, or from pytest-mock) or SIGKILL at any
syscall inside the reaction leaves, once the tree is next opened, the tree exactly as it
was before the write or, after a kill past the commit point, exactly as the write leaves
it. Never a VF without its links, a driver link without its interface, a torn state file.

The default suite runs a deterministic sample; PCIMGR_FULL_SWEEP=1 runs every point.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pcimgr.core.errors import KernelError, NeedsRoot
from pcimgr.sim import builder, profiles, undo
from pcimgr.sim.machine import SimulatedMachine
from tests.strace_faults import ENV, STRACE, needs_strace, points

CALLS = ("openat", "write", "mkdir", "symlink", "symlinkat", "unlink", "unlinkat", "rename",
         "renameat", "renameat2", "rmdir", "ftruncate", "truncate")
FULL = os.environ.get("PCIMGR_FULL_SWEEP") == "1"
PER_SCENARIO = 14
PF, NIC = "0000:05:00.0", "0000:04:00.0"
OWN = (".pcimgr-sim-kernel.lock",)  # the reactions' lock: made by the first, then kept

# (name, writes before, the write faulted): through the production Sysfs, as pcimgr makes them
SCENARIOS = [
    ("vfs-create", [], (f"bus/pci/devices/{PF}/sriov_numvfs", "2")),
    ("pf-unbind", [(f"bus/pci/devices/{PF}/sriov_numvfs", "2")],
     ("bus/pci/drivers/igb/unbind", PF)),
    ("vfio-bind", [("bus/pci/drivers/e1000e/unbind", NIC),
                   (f"bus/pci/devices/{NIC}/driver_override", "vfio-pci")],
     ("bus/pci/drivers/vfio-pci/bind", NIC)),
]
WRITE = """
import sys
from pcimgr.core.errors import PcimgrError
from pcimgr.sim.machine import SimulatedMachine
try:
    SimulatedMachine(sys.argv[1]).sysfs.write_attr(sys.argv[2], sys.argv[3])
except PcimgrError as e:
    print(e, file=sys.stderr)
    sys.exit(1)
"""


def image(root: Path) -> dict[str, str | bytes]:
    """Every entry of the tree: a directory, a link's target or a file's bytes."""
    out: dict[str, str | bytes] = {}
    for top, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(top, name)
            rel = os.path.relpath(path, root)
            if rel in OWN:
                continue
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                out[rel] = "dir"
            else:
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out


def difference(a: dict[str, str | bytes], b: dict[str, str | bytes]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))[:6]


def write(root: Path, rel: str, value: str, inject: str | None = None,
          trace: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", WRITE, str(root), rel, value]
    if inject or trace:
        assert STRACE is not None
        command = [STRACE, "-f", "-qq", "-y", "-e", f"trace={','.join(CALLS)}",
                   "-o", str(trace or os.devnull),
                   *(["-e", f"inject={inject}"] if inject else []), *command]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=120)


def prepared(tmp_path: Path, before: list[tuple[str, str]]) -> Path:
    root = tmp_path / "base"
    builder.build(str(root), profiles.get("demo"))
    sysfs = SimulatedMachine(str(root)).sysfs
    for rel, value in before:
        sysfs.write_attr(rel, value)
    return root


def sample(cases: list, n: int) -> list:
    if FULL or len(cases) <= n:
        return cases
    step = (len(cases) - 1) / (n - 1)
    return [cases[round(i * step)] for i in range(n)]


@needs_strace
@pytest.mark.parametrize("name,before,faulted", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_a_fault_anywhere_in_a_reaction_leaves_before_or_after(
        tmp_path: Path, name: str, before: list[tuple[str, str]],
        faulted: tuple[str, str]) -> None:
    base = prepared(tmp_path, before)
    old = image(base)
    probe = tmp_path / "probe"
    shutil.copytree(base, probe, symlinks=True)
    log = tmp_path / "trace"
    clean = write(probe, *faulted, trace=log)
    assert clean.returncode == 0, clean.stderr
    new = image(probe)
    assert new != old
    # the reaction's own syscalls: those on the tree, after the production write opened
    # the attribute (the opening of the tree before it only reads)
    found = points(log, CALLS, (str(probe),))
    first = next(i for i, p in enumerate(found) if p.call == "openat"
                 and faulted[0].rpartition("/")[2] in p.line and "O_WRONLY" in p.line)
    found = [p for p in found[first:] if p.call != "openat" or "O_RDONLY" not in p.line]
    assert len(found) > 10, "the reaction made hardly any file operation"
    cases = sample([(p, f) for p in found for f in ("error=ENOSPC", "signal=SIGKILL")],
                   PER_SCENARIO)
    failures = []
    for n, (point, fault) in enumerate(cases):
        root = tmp_path / f"c{n}"
        shutil.copytree(base, root, symlinks=True)
        r = write(root, *faulted, inject=f"{point.call}:{fault}:when={point.ordinal}")
        killed = r.returncode == -signal.SIGKILL
        SimulatedMachine(str(root))  # the next opening completes a reaction cut short
        now = image(root)
        where = f"{fault} at {point.call} #{point.ordinal} ({point.line[:90]})"
        if fault == "error=ENOSPC" and r.returncode == 0:
            ok = now == new  # the fault hit a call whose failure the reaction survives
        elif fault == "error=ENOSPC":
            ok = now == old and r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
        else:
            ok = killed and now in (old, new)
        if not ok:
            failures.append(f"{where}: exit {r.returncode}, differs from before at "
                            f"{difference(old, now)}, from after at {difference(new, now)}; "
                            f"{r.stderr.strip()[-160:]!r}")
        shutil.rmtree(root)
    assert failures == [], f"{len(failures)} of {len(cases)}:\n" + "\n".join(failures)


@pytest.mark.parametrize("fail_at", [0, 1, 5, 30, 60])
def test_a_failed_file_operation_undoes_the_reaction_at_once(
        demo_root: Path, mocker, fail_at: int) -> None:
    """In-process: the N-th file operation of creating two VFs fails; the write is refused
    (KernelError, as a real refusal) and the tree is as before, the kernel's cached state
    included (the next write sees no VFs)."""
    old = image(demo_root)
    calls = []
    real = undo.write_bytes

    def full(path: str, data: bytes) -> None:
        calls.append(path)
        if len(calls) == fail_at + 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(path, data)

    mocker.patch("pcimgr.sim.undo.write_bytes", side_effect=full)
    sysfs = SimulatedMachine(str(demo_root)).sysfs
    with pytest.raises(KernelError, match="No space left on device"):
        sysfs.write_attr(f"bus/pci/devices/{PF}/sriov_numvfs", "2")
    assert image(demo_root) == old
    mocker.stopall()
    sysfs.write_attr(f"bus/pci/devices/{PF}/sriov_numvfs", "2")
    links = sorted(p.name for p in (demo_root / "bus/pci/devices" / PF).glob("virtfn*"))
    assert links == ["virtfn0", "virtfn1"]


def test_a_refused_store_changes_nothing(demo_root: Path) -> None:
    """A store that fails after its first effects (SR-IOV off while a VF's group is held:
    EBUSY) leaves the tree as it was, its sriov_numvfs file included."""
    machine = SimulatedMachine(str(demo_root))
    machine.sysfs.write_attr(f"bus/pci/devices/{PF}/sriov_numvfs", "1")
    vf = os.path.basename(os.readlink(demo_root / "bus/pci/devices" / PF / "virtfn0"))
    machine.sysfs.write_attr(f"bus/pci/devices/{vf}/driver_override", "vfio-pci")
    machine.sysfs.write_attr("bus/pci/drivers/igbvf/unbind", vf)
    machine.sysfs.write_attr("bus/pci/drivers_probe", vf)
    group = os.path.basename(os.readlink(demo_root / "bus/pci/devices" / vf / "iommu_group"))
    machine.kernel.hold_vfio(int(group), "qemu-vm1")
    old = image(demo_root)
    with pytest.raises(KernelError, match="Device or resource busy"):
        machine.sysfs.write_attr(f"bus/pci/devices/{PF}/sriov_numvfs", "0")
    assert image(demo_root) == old
    assert (demo_root / "bus/pci/devices" / PF / "sriov_numvfs").read_text() == "1\n"


def test_a_tree_left_mid_reaction_is_whole_for_the_next_reader(demo_root: Path) -> None:
    """A kill inside the reaction, played by a child that stops itself there: `pcimgr list`
    afterwards lists the host as it was, and the undo directory is gone."""
    old = image(demo_root)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        real = undo.symlink

        def die(target: str, link: str) -> None:
            real(target, link)
            if link.endswith("physfn"):
                os._exit(9)  # as SIGKILL: no handler, no finally

        undo.symlink = die  # type: ignore[assignment]
        SimulatedMachine(str(demo_root)).sysfs.write_attr(
            f"bus/pci/devices/{PF}/sriov_numvfs", "2")
        os._exit(0)
    assert os.waitpid(child, 0)[1] >> 8 == 9
    assert (demo_root / ".pcimgr-sim-undo").is_dir()
    r = subprocess.run([sys.executable, "-m", "pcimgr", "--sysfs-root", str(demo_root),
                        "list", "--all", "--json"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    assert "0000:05:10.0" not in r.stdout and PF in r.stdout
    assert not (demo_root / ".pcimgr-sim-undo").exists()
    assert image(demo_root) == old


def test_another_user_cannot_finish_it_and_is_told_how(demo_root: Path, mocker) -> None:
    (demo_root / ".pcimgr-sim-undo").mkdir()
    (demo_root / ".pcimgr-sim-undo" / "log").write_text("")
    mocker.patch("pcimgr.sim.undo.os.access", return_value=False)
    with pytest.raises(NeedsRoot, match="killed in the middle of a change; run any pcimgr "
                                        "command on it as its owner"):
        SimulatedMachine(str(demo_root))
