import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli.app import cli
from pcimgr.host.sysfs import Sysfs
from pcimgr.sim import builder, profiles
from pcimgr.sim.machine import SimulatedMachine

DATA = Path(__file__).parent / "data"


_OWN_BASETEMP = pytest.StashKey[str]()
_LAB_RESULTS = pytest.StashKey[dict]()
IN_LAB_GUEST = os.environ.get("PCIMGR_LAB_GUEST") == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--lab-report", metavar="PATH",
                     help="inside the lab guest: write each test's outcome to PATH as JSON")


def pytest_configure(config: pytest.Config) -> None:
    # Simulated hosts are thousands of small files; on this disk (ext4 with discard)
    # each create costs ~0.8 ms, on tmpfs ~0.05 ms.
    if not config.option.basetemp and os.access("/dev/shm", os.W_OK):
        config.option.basetemp = f"/dev/shm/pcimgr-tests-{os.getuid()}-{os.getpid()}"
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Inside the lab guest: remember the worst outcome of each test's phases."""
    if not IN_LAB_GUEST:
        return
    entry = _GUEST_OUTCOMES.setdefault(report.nodeid, {"outcome": "passed", "text": ""})
    if report.failed or (report.skipped and entry["outcome"] == "passed"):
        entry["outcome"] = "failed" if report.failed else "skipped"
        entry["text"] = (str(report.longrepr[2]) if report.skipped
                         and isinstance(report.longrepr, tuple) else report.longreprtext)


_GUEST_OUTCOMES: dict[str, dict] = {}


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--lab-report")
    if IN_LAB_GUEST and path:
        Path(path).write_text(json.dumps(_GUEST_OUTCOMES))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Outside the guest, each `lab` test becomes a stand-in that reports its in-guest result
    (its fixtures are for the guest: they never run on the host)."""
    if IN_LAB_GUEST:
        return
    for i, item in enumerate(items):
        if item.get_closest_marker("lab") is not None:
            proxy = LabResult.from_parent(item.parent, name=item.name)
            proxy.own_markers.extend(item.iter_markers())
            items[i] = proxy


def lab_boot(item: pytest.Item) -> str:
    """The kind of lab boot a lab test runs in (tests/lab/harness.py BOOTS): the argument of
    its `lab_boot` marker, "default" without one."""
    marker = item.get_closest_marker("lab_boot")
    return str(marker.args[0]) if marker is not None and marker.args else "default"


class LabResult(pytest.Item):
    """All lab tests of a session that need the same kind of boot run in one boot of it,
    started by the first of them (one boot per kind)."""

    def runtest(self) -> None:
        config = self.config
        boot = lab_boot(self)
        from tests.lab.harness import BOOTS
        if boot not in BOOTS:  # a misspelt boot fails, never skips
            pytest.fail(f"no lab boot {boot!r} (lab_boot takes one of {', '.join(BOOTS)})",
                        pytrace=False)
        if _LAB_RESULTS not in config.stash:
            config.stash[_LAB_RESULTS] = {}
        if boot not in config.stash[_LAB_RESULTS]:
            config.stash[_LAB_RESULTS][boot] = _run_lab(self.session, boot)
        results = config.stash[_LAB_RESULTS][boot]
        if "unavailable" in results:
            if os.environ.get("CI") == "true":  # CI machines can run the lab: never skip there
                pytest.fail(f"the QEMU lab cannot run: {results['unavailable']}", pytrace=False)
            pytest.skip(f"the QEMU lab cannot run here: {results['unavailable']}")
        outcome = results.get(self.nodeid)
        if outcome is None:
            pytest.fail("the lab guest did not run this test; its pytest said:\n"
                        f"{results['_output']}", pytrace=False)
        if outcome["outcome"] == "skipped":
            pytest.skip(f"in the lab guest: {outcome['text']}")
        if outcome["outcome"] == "failed":
            where = "" if boot == "default" else f", {boot} boot"
            pytest.fail(f"in the lab guest (Linux {results['_kernel']}{where}):\n"
                        f"{outcome['text']}", pytrace=False)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.name} (in the QEMU lab)"


def _run_lab(session: pytest.Session, boot: str = "default") -> dict:
    import shlex
    import sys

    from tests.lab import harness
    reason = harness.available()
    if reason is not None:
        return {"unavailable": reason}
    ids = [item.nodeid for item in session.items
           if isinstance(item, LabResult) and lab_boot(item) == boot]
    command = (f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider "
               f"--lab-report=/run/lab/report.json {shlex.join(ids)}; uname -r > /run/lab/kernel")
    # 43 scenarios under TCG on one vCPU: ~12 min on a quiet machine, more under load; the
    # desktop boot's few scenarios take ~2 min
    timeout = 2400 if boot == "default" else 1200
    r = harness.run(command, timeout=timeout, collect=("report.json", "kernel"), boot=boot)
    results = json.loads(r.files.get("report.json", "{}"))
    results["_output"] = r.output[-4000:]
    results["_kernel"] = r.files.get("kernel", "?").strip()
    return results


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWN_BASETEMP in config.stash:
        shutil.rmtree(config.stash[_OWN_BASETEMP], ignore_errors=True)

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(autouse=True)
def _fixed_pci_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names come from a pinned excerpt so golden output survives pci.ids updates."""
    monkeypatch.setenv("PCIMGR_PCI_IDS", str(DATA / "pci.ids"))
    monkeypatch.delenv("PCIMGR_SYSFS_ROOT", raising=False)


@pytest.fixture
def make_host(tmp_path: Path) -> Callable[..., Path]:
    def make(profile: str = "demo", iommu: bool | None = None, name: str = "sys") -> Path:
        root = tmp_path / name
        builder.build(str(root), profiles.get(profile), iommu=iommu)
        return root
    return make


@pytest.fixture
def demo_root(make_host: Callable[..., Path]) -> Path:
    return make_host("demo")


@pytest.fixture
def demo_machine(demo_root: Path) -> SimulatedMachine:
    return SimulatedMachine(str(demo_root))


@pytest.fixture
def demo_sysfs(demo_machine: SimulatedMachine) -> Sysfs:
    return demo_machine.sysfs


@pytest.fixture
def run() -> Callable[..., Result]:
    """Run the CLI in-process as a user would; returns click's Result (output, exit_code)."""
    def invoke(*args: str | os.PathLike) -> Result:
        return CliRunner().invoke(cli, [str(a) for a in args], prog_name="pcimgr")
    return invoke


def golden(name: str, actual: str) -> None:
    """Compare with tests/golden/NAME; PCIMGR_REGEN_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("PCIMGR_REGEN_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        # JSON goldens indented, so that a change reads as a small diff
        path.write_text(json.dumps(json.loads(actual), indent=2) + "\n"
                        if name.endswith(".json") else actual)
    assert path.exists(), f"missing golden file {path}; run with PCIMGR_REGEN_GOLDEN=1"
    expected = path.read_text()
    if name.endswith(".json"):
        assert json.loads(actual) == json.loads(expected)
    else:
        assert actual == expected


def driver_of(root: Path, address: str) -> str | None:
    link = root / "bus/pci/devices" / address / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def tree(root: Path) -> dict[str, str]:
    """Every file's content and link's target below root, but pcimgr's own state and lock."""
    out = {}
    for p in root.rglob("*"):
        rel = str(p.relative_to(root))
        if rel.startswith((".pcimgr-state", ".pcimgr-run")):
            continue
        out[rel] = ("-> " + os.readlink(p)) if p.is_symlink() else (
            p.read_bytes().hex() if p.is_file() else "dir")
    return out


@pytest.fixture(scope="session")
def libvirt_uri() -> Iterator[str]:
    """A real libvirtd (qemu:///system), started for the session when none answers."""
    from tests import libvirtd
    why = libvirtd.unavailable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"a real libvirtd is required under CI: {why}")
        pytest.skip(why)
    started = libvirtd.start()
    yield libvirtd.URI
    libvirtd.stop(started)


@pytest.fixture
def make_domain(libvirt_uri: str) -> Iterator[Callable[..., str]]:
    """Define (and optionally start) small TCG domains; all are removed afterwards."""
    from tests import libvirtd
    made: list[str] = []

    def make(name: str, running: bool = False) -> str:
        name = f"pcimgr-test-{name}"
        made.append(name)
        libvirtd.define(name, running)
        return name
    yield make
    for name in made:
        libvirtd.virsh("destroy", name)
        libvirtd.virsh("undefine", name)
