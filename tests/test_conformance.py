"""The simulated kernel against the real kernel's recorded answers (tests/lab/fixtures)."""


import pytest

from pcimgr.host.sysfs import Sysfs
from tests.lab import conformance

REAL = conformance.load_fixture()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    from pcimgr.sim import builder, profiles
    root = tmp_path_factory.mktemp("conformance") / "sys"
    builder.build(str(root), profiles.get("lab"))
    return conformance.run_sequence(Sysfs(str(root)))


@pytest.mark.parametrize("step", range(len(REAL["observations"])),
                         ids=lambda i: f"{i:02d}-" + ("initial" if i == 0 else
                                                     "=".join(conformance.SEQUENCE[i - 1])
                                                     .replace("bus/pci/", "").replace("\n", "NL")))
def test_simulator_agrees_with_linux(simulated: list[dict], step: int) -> None:
    real = REAL["observations"][step]
    sim = simulated[step]
    assert sim["write"] == real["write"]
    assert (sim["error"], sim["state"]) == (real["error"], real["state"]), (
        f"after {real['write']} Linux {REAL['kernel']} answered {real['error']}")


def test_fixture_covers_the_whole_sequence() -> None:
    assert [o["write"] for o in REAL["observations"][1:]] == [list(w) for w in conformance.SEQUENCE]


def test_simulator_lays_out_the_host_shapes_as_linux(tmp_path) -> None:
    """virtio and USB NICs, NVMe under native multipath, a SCSI disk, bond/bridge/VLAN/macvlan
    and device-mapper stacks: where the real kernel put each, the simulated host puts it."""
    from dataclasses import replace

    from pcimgr.sim import builder, profiles
    lab = profiles.get("lab")
    host = replace(lab.host, net_stacks=conformance.NET_STACKS,
                   block_stacks=conformance.BLOCK_STACKS)
    root = tmp_path / "sys"
    builder.build(str(root), replace(lab, host=host))
    assert conformance.layout(Sysfs(str(root))) == REAL["layout"]
