"""The simulated kernel against the real kernel's recorded answers (tests/lab/fixtures)."""


import pytest

from pcimgr.sim.machine import SimulatedMachine
from tests.lab import conformance

REAL = conformance.load_fixture()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    from pcimgr.sim import builder, profiles
    root = tmp_path_factory.mktemp("conformance") / "sys"
    builder.build(str(root), profiles.get("lab"))
    return conformance.run_sequence(SimulatedMachine(str(root)).sysfs)


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
    assert conformance.layout(SimulatedMachine(str(root)).sysfs) == REAL["layout"]


def _steps(sequence: tuple[tuple[str, str], ...]) -> list[str]:
    return ["initial"] + [f"{i:02d}-" + "=".join(w).replace("bus/", "").replace(
        "class/mdev_bus/", "") for i, w in enumerate(sequence, 1)]


@pytest.fixture(scope="module")
def simulated_variant(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    root = tmp_path_factory.mktemp("variant") / "sys"
    return conformance.simulated_variant_observations(str(root))


@pytest.mark.parametrize("step", range(len(REAL["variant"]["observations"])),
                         ids=_steps(conformance.VARIANT_SEQUENCE))
def test_simulator_agrees_with_linux_on_a_vfio_variant(simulated_variant: list[dict],
                                                       step: int) -> None:
    """Override binding, new_id and unbind of the lab's test variant, with each VF's
    vfio-dev/vfioN entries (device, power, subsystem, uevent) and class/vfio-dev."""
    real = REAL["variant"]["observations"][step]
    assert simulated_variant[step] == real, f"after {real['write']} Linux answered {real['error']}"


@pytest.fixture(scope="module")
def simulated_mdev(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    root = tmp_path_factory.mktemp("mdev") / "sys"
    return conformance.simulated_mdev_observations(str(root))


@pytest.mark.parametrize("step", range(len(REAL["mdev"]["observations"])),
                         ids=_steps(conformance.MDEV_SEQUENCE))
def test_simulator_agrees_with_linux_on_mdevs(simulated_mdev: list[dict], step: int) -> None:
    """mtty on Linux 6.1: create (EEXIST, EINVAL, an upper-case UUID), remove (0, 1, gone:
    ENOENT), the 24 ports exhausted (ENOSPC), what each type counts, each mdev's entries,
    group (its type "unknown"), uevent, vfio-dev and /dev/vfio node."""
    real = REAL["mdev"]["observations"][step]
    assert simulated_mdev[step] == real, f"after {real['write']} Linux answered {real['error']}"


def test_fixture_covers_the_variant_and_mdev_sequences() -> None:
    assert [o["write"] for o in REAL["variant"]["observations"][1:]] == \
        [list(w) for w in conformance.VARIANT_SEQUENCE]
    assert [o["write"] for o in REAL["mdev"]["observations"][1:]] == \
        [list(w) for w in conformance.MDEV_SEQUENCE]
