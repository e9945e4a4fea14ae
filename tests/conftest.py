import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pcimgr.cli import cli
from pcimgr.sim import builder, profiles
from pcimgr.sysfs import Sysfs

DATA = Path(__file__).parent / "data"


_OWN_BASETEMP = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    # Simulated hosts are thousands of small files; on this disk (ext4 with discard)
    # each create costs ~0.8 ms, on tmpfs ~0.05 ms.
    if not config.option.basetemp and os.access("/dev/shm", os.W_OK):
        config.option.basetemp = f"/dev/shm/pcimgr-tests-{os.getuid()}-{os.getpid()}"
        config.stash[_OWN_BASETEMP] = config.option.basetemp


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
def demo_sysfs(demo_root: Path) -> Sysfs:
    return Sysfs(str(demo_root))


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
        path.write_text(actual)
    assert path.exists(), f"missing golden file {path}; run with PCIMGR_REGEN_GOLDEN=1"
    expected = path.read_text()
    if name.endswith(".json"):
        assert json.loads(actual) == json.loads(expected)
    else:
        assert actual == expected


def driver_of(root: Path, address: str) -> str | None:
    link = root / "bus/pci/devices" / address / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None
