"""`pcimgr export`: each format checked by its consumer's own code where that installs from
PyPI (Nova's PCI parsers), by schemas built from the Kubernetes projects' documented fields
and an evaluator of the device plugin's selectors, and by golden files."""

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from pcimgr.cli.app import cli
from pcimgr.sim import builder, profiles
from tests.conftest import golden
from tests.fleet import plugin_selectors as selectors
from tests.fleet import schemas

REPO = Path(__file__).resolve().parents[1]
NOVA_PYTHON = Path(os.environ.get("PCIMGR_NOVA_PYTHON", REPO / ".cache/nova-venv/bin/python"))

# what the demo scenario below puts in each pool, written out by hand
INTENDED = {
    "intel.com/pci_8086_105e_vfio": {"0000:04:00.0", "0000:04:00.1"},
    "intel.com/sriov_8086_10ca_vfio": {"0000:05:10.0", "0000:05:10.2", "0000:05:10.4",
                                       "0000:05:10.6"},
    "intel.com/sriov_15b3_1018_netdev": {"0000:07:00.2", "0000:07:00.3"},
}


def pcimgr(root: Path, *args: str):
    r = CliRunner().invoke(cli, ["--sysfs-root", str(root), *args], prog_name="pcimgr")
    return r


def prepared(root: Path, *commands: tuple[str, ...]) -> Path:
    builder.build(str(root), profiles.get(root.name.split("-")[0]))
    for args in commands:
        r = pcimgr(root, *args)
        assert r.exit_code == 0, r.output
    return root


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo host with the 82571EB pair on vfio-pci, 4 VFs of the 82576 on vfio-pci (VF 0
    with a MAC and VLAN) and the ConnectX-5's 2 VFs on mlx5_core, all defined and applied."""
    return prepared(tmp_path_factory.mktemp("exports") / "demo",
                    ("define", "04:00.0", "--driver", "vfio-pci", "--group"),
                    ("define", "05:00.0", "--vfs", "4"),
                    ("define", "05:00.0", "--vf", "0", "--mac", "52:54:00:5e:00:01", "--vlan",
                     "100"),
                    ("define", "07:00.0", "--vfs", "2", "--vf-driver", "host"),
                    ("apply",))


def export(root: Path, *args: str) -> str:
    r = pcimgr(root, "export", *args)
    assert r.exit_code == 0, r.output
    return r.stdout


def facts_of(root: Path, name: str = "node1") -> dict:
    return json.loads(export(root, "facts", "--host-name", name))


def test_facts_carry_the_read_commands_documents(demo: Path) -> None:
    facts = facts_of(demo)
    assert facts["host"] == "node1" and facts["pcimgr_version"] == "0.1.0"
    assert facts["machine"] == "a simulated host"
    assert facts["devices"] == json.loads(pcimgr(demo, "list", "--all", "--json").stdout)
    assert facts["groups"] == json.loads(pcimgr(demo, "groups", "--json").stdout)
    assert facts["vfs"] == json.loads(pcimgr(demo, "vfs", "list", "--json").stdout)
    assert [(d["address"], d["ok"]) for d in facts["definitions"]] == [
        ("0000:04:00.0", True), ("0000:04:00.1", True), ("0000:05:00.0", True),
        ("0000:07:00.0", True)]


@pytest.mark.parametrize("fmt,args,name", [
    ("sriov-device-plugin", (), "export_sriov_device_plugin.json"),
    ("sriov-device-plugin", ("--configmap",), "export_sriov_device_plugin_configmap.yaml"),
    ("kubevirt", (), "export_kubevirt.json"),
    ("proxmox", (), "export_proxmox.sh"),
    ("nova", (), "export_nova.conf"),
    ("nova", ("--physnet", "physnet1", "--json"), "export_nova_physnet.json"),
])
def test_golden(demo: Path, fmt: str, args: tuple[str, ...], name: str) -> None:
    golden(name, export(demo, fmt, "--host-name", "node1", *args))


def test_device_plugin_config_fits_the_documented_fields_and_takes_exactly_the_pools(
        demo: Path) -> None:
    config = json.loads(export(demo, "sriov-device-plugin"))
    jsonschema.validate(config, schemas.DEVICE_PLUGIN)
    configmap = yaml.safe_load(export(demo, "sriov-device-plugin", "--configmap"))
    assert (configmap["kind"], configmap["metadata"]) == (
        "ConfigMap", {"name": "sriovdp-config", "namespace": "kube-system"})
    assert json.loads(configmap["data"]["config.json"]) == config
    taken = selectors.pools(config, selectors.host_devices(facts_of(demo)))
    assert taken == INTENDED


def test_a_pool_leaves_out_the_same_model_s_vfs_that_pcimgr_does_not_manage(
        tmp_path: Path) -> None:
    """Two 82576-like PFs, each with 2 VFs on vfio-pci; only the first is defined: its pool
    (by PF name range) must not take the other PF's VFs, nor may Nova's specs."""
    root = prepared(tmp_path / "scale:2x2",
                    ("define", "01:00.0", "--vfs", "2"), ("apply",),
                    ("detach", "02:10.0", "02:10.1"))
    facts = facts_of(root)
    config = json.loads(export(root, "sriov-device-plugin"))
    assert config["resourceList"][0]["selectors"]["pfNames"] == ["enp1s0#0-1"]
    ours = {"0000:01:10.0", "0000:01:10.1"}
    assert selectors.pools(config, selectors.host_devices(facts)) == {
        "intel.com/sriov_8086_10ca_vfio": ours}
    assert set(nova_matches(root, facts)["matched"]) == ours
    # KubeVirt's own plugin selects by vendor:device only: pcimgr says what it would overreach
    r = pcimgr(root, "export", "kubevirt", "--kubevirt-allocates")
    assert r.exit_code == 0
    assert "0000:02:10.0 (8086:10ca) is on vfio-pci but not pcimgr's" in r.stderr
    assert "externalResourceProvider" not in r.stdout


def test_kubevirt_permits_the_vfio_pools_the_device_plugin_advertises(demo: Path) -> None:
    patch = json.loads(export(demo, "kubevirt"))
    jsonschema.validate(patch, schemas.KUBEVIRT_PATCH)
    devices = patch["spec"]["configuration"]["permittedHostDevices"]["pciHostDevices"]
    config = json.loads(export(demo, "sriov-device-plugin"))
    vfio = {f"{r['resourcePrefix']}/{r['resourceName']}" for r in config["resourceList"]
            if r["selectors"]["drivers"] == ["vfio-pci"]}
    assert {d["resourceName"] for d in devices} == vfio  # KubeVirt assigns vfio-pci only
    assert all(d["externalResourceProvider"] for d in devices)
    assert {d["pciVendorSelector"] for d in devices} == {"8086:105E", "8086:10CA"}


def nova_matches(root: Path, facts: dict) -> dict:
    if not NOVA_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"no Nova at {NOVA_PYTHON}; scripts/run test installs it")
        pytest.skip(f"no Nova at {NOVA_PYTHON} (scripts/run test installs it)")
    conf = root.parent / f"{root.name}-nova.conf"
    conf.write_text(export(root, "nova"))
    devices = [{"vendor_id": d["vendor_id"], "product_id": d["device_id"],
                "address": d["address"], "parent_addr": d["physfn"]} for d in facts["devices"]]
    r = subprocess.run([str(NOVA_PYTHON), str(REPO / "tests/fleet/nova_check.py")],
                       input=json.dumps({"config": str(conf), "devices": devices}),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_nova_parses_the_specs_and_aliases_and_they_match_exactly_the_pools(demo: Path) -> None:
    found = nova_matches(demo, facts_of(demo))
    assert set(found["matched"]) == set().union(*INTENDED.values())
    assert found["specs"] == 8
    # pcimgr binds the vfio-pci functions: Nova must not have libvirt move them
    assert {a for a, tags in found["tags"].items() if tags.get("managed") == "false"} == (
        INTENDED["intel.com/pci_8086_105e_vfio"] | INTENDED["intel.com/sriov_8086_10ca_vfio"])
    assert {name: [s["dev_type"] for s in specs] for name, (_, specs)
            in found["aliases"].items()} == {
        "pci_8086_105e_vfio": ["type-PCI"], "sriov_8086_10ca_vfio": ["type-VF"],
        "sriov_15b3_1018_netdev": ["type-VF"]}


def test_nova_refuses_what_its_parser_refuses(demo: Path, tmp_path: Path) -> None:
    """The check is Nova's own: a spec it cannot parse fails it (the test can fail)."""
    if not NOVA_PYTHON.exists():
        pytest.skip(f"no Nova at {NOVA_PYTHON}")
    conf = tmp_path / "bad.conf"
    conf.write_text('[pci]\ndevice_spec = {"vendor_id": "8086", "address": "0000:05:20.9"}\n')
    r = subprocess.run([str(NOVA_PYTHON), str(REPO / "tests/fleet/nova_check.py")],
                       input=json.dumps({"config": str(conf), "devices": []}),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "nova refused the configuration" in r.stderr


MAP_KEYS = {"node", "path", "id", "subsystem-id", "iommugroup"}


def test_proxmox_maps_carry_what_the_kernel_shows_for_each_path(demo: Path) -> None:
    """Each map entry's id, subsystem-id and iommugroup as the sysfs tree has them: what
    Proxmox compares at VM start to notice changed hardware."""
    script = export(demo, "proxmox", "--host-name", "pve1")
    mappings: dict[str, list[dict[str, str]]] = {}
    for command in script.replace("\\\n", " ").splitlines():
        if command.startswith("#"):
            continue
        words = shlex.split(command)
        assert words[:4] == ["pvesh", "create", "/cluster/mapping/pci", "--id"]
        assert re.fullmatch(r"[a-z][a-z0-9_-]+", words[4])  # PVE's configid
        maps = [dict(kv.split("=", 1) for kv in words[i + 1].split(","))
                for i, w in enumerate(words) if w == "--map"]
        mappings[words[4]] = maps
    assert {name: {m["path"] for m in maps} for name, maps in mappings.items()} == {
        k.split("/")[1]: v for k, v in INTENDED.items() if "vfio" in k}
    for maps in mappings.values():
        for m in maps:
            assert set(m) == MAP_KEYS and m["node"] == "pve1"
            dev = demo / "bus/pci/devices" / m["path"]
            ids = [(dev / f).read_text().strip()[2:] for f in
                   ("vendor", "device", "subsystem_vendor", "subsystem_device")]
            assert m["id"] == f"{ids[0]}:{ids[1]}" and m["subsystem-id"] == f"{ids[2]}:{ids[3]}"
            assert m["iommugroup"] == os.path.basename(os.readlink(dev / "iommu_group"))


def test_a_fleet_merges_where_the_consumer_is_cluster_wide(demo: Path, tmp_path: Path) -> None:
    lab = prepared(tmp_path / "lab", ("define", "02:01.0", "--driver", "vfio-pci", "--group"),
                   ("apply",))
    files = []
    for name, root in (("node1", demo), ("node2", lab)):
        files += ["--facts", str(tmp_path / f"{name}.json")]
        (tmp_path / f"{name}.json").write_text(export(root, "facts", "--host-name", name))
    inventory = json.loads(export(demo, "inventory", *files))
    assert {(d["host"], d["pcimgr_version"]) for d in inventory} == {("node1", "0.1.0"),
                                                                    ("node2", "0.1.0")}
    assert len(inventory) == len(facts_of(demo)["devices"]) + len(facts_of(lab)["devices"])
    nodes = re.findall(r"node=(\w+),path=([0-9a-f:.]+)", export(demo, "proxmox", *files))
    assert {n for n, _ in nodes} == {"node1", "node2"}
    assert ("node2", "0000:02:02.0") in nodes
    r = pcimgr(demo, "export", "nova", *files)
    assert r.exit_code == 2 and "one node" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("args,code,message", [
    (("kubevirt", "--physnet", "p1"), 2, "export kubevirt takes no --physnet"),
    (("sriov-device-plugin", "--namespace", "sriov"), 2, "add --configmap"),
    (("proxmox", "--facts", "/nonexistent.json"), 3, "no facts file /nonexistent.json"),
    (("proxmox", "--facts", "FACTS", "--host-name", "x"), 2, "give one of them"),
    (("inventory", "--facts", "NOTFACTS"), 2, "is not pcimgr facts"),
    (("yaml",), 2, "Invalid value for 'FORMAT'"),
    (("kubevirt", "--resource-prefix", "a/b"), 2, "not a resource prefix: 'a/b'"),
])
def test_bad_input_is_one_line_naming_the_fix(demo: Path, tmp_path: Path, args: tuple,
                                              code: int, message: str) -> None:
    (tmp_path / "facts.json").write_text(export(demo, "facts"))
    (tmp_path / "not.json").write_text('{"devices": []}')
    args = tuple(str(tmp_path / "facts.json") if a == "FACTS" else
                 str(tmp_path / "not.json") if a == "NOTFACTS" else a for a in args)
    r = pcimgr(demo, "export", *args)
    assert r.exit_code == code and message in r.stderr, r.output
    assert "Traceback" not in r.output and r.stdout == ""


def test_a_drifted_definition_is_left_out_with_a_notice(tmp_path: Path) -> None:
    root = prepared(tmp_path / "demo", ("define", "05:00.0", "--vfs", "2"), ("apply",),
                    ("vfs", "destroy", "05:00.0"))
    r = pcimgr(root, "export", "sriov-device-plugin")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"resourceList": []}
    assert "0000:05:00.0 is not as defined (0 VF(s), defined 2)" in r.stderr


@pytest.fixture(scope="module")
def modern(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The modern host with a ConnectX VF and a virtio-net VF defined onto their VFIO
    variants, and an 82576 VF onto vfio-pci, applied."""
    return prepared(tmp_path_factory.mktemp("exports") / "modern",
                    ("define", "41:00.3", "--driver", "mlx5_vfio_pci"),
                    ("define", "c1:00.1", "--driver", "virtio_vfio_pci"),
                    ("define", "02:10.0", "--driver", "vfio-pci"),
                    ("apply",))


def test_variant_pools_reach_every_consumer(modern: Path) -> None:
    """A variant's functions are a pool of their own (the guest gets another driver's
    device); Nova tags them managed=no and, where the driver migrates, live_migratable;
    the device plugin selects by the variant; KubeVirt's own plugin takes vfio-pci only."""
    facts = facts_of(modern)
    found = nova_matches(modern, facts)
    assert set(found["matched"]) == {"0000:41:00.3", "0000:c1:00.1", "0000:02:10.0"}
    assert {a: t.get("managed") for a, t in found["tags"].items()} == dict.fromkeys(
        ("0000:41:00.3", "0000:c1:00.1", "0000:02:10.0"), "false")
    assert {a for a, t in found["tags"].items() if t.get("live_migratable") == "true"} == {
        "0000:41:00.3", "0000:c1:00.1"}
    config = json.loads(export(modern, "sriov-device-plugin"))
    by_name = {r["resourceName"]: r["selectors"] for r in config["resourceList"]}
    assert by_name["pci_15b3_101e_mlx5_vfio_pci"]["drivers"] == ["mlx5_vfio_pci"]
    assert by_name["pci_1af4_1041_virtio_vfio_pci"]["pciAddresses"] == ["0000:c1:00.1"]
    own = yaml.safe_load(export(modern, "kubevirt", "--kubevirt-allocates"))
    names = {e["resourceName"] for e in own["spec"]["configuration"]["permittedHostDevices"][
        "pciHostDevices"]}
    assert names == {"intel.com/pci_8086_10ca_vfio"}


def test_proxmox_is_told_to_keep_a_variant_driver(modern: Path) -> None:
    """Proxmox rebinds a mapped function to vfio-pci unless the VM's hostpci entry says
    driver=keep (qemu-server 9.0.25): the script says so for a variant's mapping, and the
    script still runs through sh as one command per mapping."""
    r = pcimgr(modern, "export", "proxmox")
    assert r.exit_code == 0
    assert "# pci_15b3_101e_mlx5_vfio_pci: on a VFIO variant driver: guests use hostpciN: " \
        "mapping=pci_15b3_101e_mlx5_vfio_pci,driver=keep" in r.stdout
    assert "mapping=pci_8086_10ca_vfio" not in r.stdout  # plain vfio-pci: nothing to keep
    assert "driver=keep` (qemu-server >= 9.0.25)" in r.stderr
    sh = subprocess.run(["sh", "-n"], input=r.stdout, capture_output=True, text=True)
    assert sh.returncode == 0, sh.stderr


M1, M2, M3 = ("0d0c0b0a-0000-4000-8000-000000000001", "0d0c0b0a-0000-4000-8000-000000000002",
              "0d0c0b0a-0000-4000-8000-000000000003")


@pytest.fixture(scope="module")
def mdev_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 'mdev' host with two T4 vGPUs and an mtty mdev defined (and started)."""
    return prepared(tmp_path_factory.mktemp("exports") / "mdev",
                    ("mdev", "define", "0000:3b:00.0", "nvidia-226", "--uuid", M1, "--auto"),
                    ("mdev", "define", "0000:3b:00.0", "nvidia-226", "--uuid", M2, "--auto"),
                    ("mdev", "define", "mtty", "mtty-2", "--uuid", M3),
                    ("mdev", "start-parent", "0000:3b:00.0"))


def test_facts_carry_the_mdev_definitions(mdev_host: Path) -> None:
    facts = facts_of(mdev_host)
    assert facts["mdevs"] == [
        {"uuid": M1, "parent": "0000:3b:00.0", "pci": "0000:3b:00.0", "type": "nvidia-226",
         "type_name": "GRID T4-2Q", "device_api": "vfio-pci", "start": "auto", "running": True},
        {"uuid": M2, "parent": "0000:3b:00.0", "pci": "0000:3b:00.0", "type": "nvidia-226",
         "type_name": "GRID T4-2Q", "device_api": "vfio-pci", "start": "auto", "running": True},
        {"uuid": M3, "parent": "mtty", "pci": None, "type": "mtty-2",
         "type_name": "Dual port serial", "device_api": "vfio-pci", "start": "manual",
         "running": False}]


def test_kubevirt_permits_the_defined_mdev_types_by_name(mdev_host: Path) -> None:
    patch = json.loads(export(mdev_host, "kubevirt"))
    jsonschema.validate(patch, schemas.KUBEVIRT_PATCH)
    assert patch["spec"]["configuration"]["permittedHostDevices"]["mediatedDevices"] == [
        {"mdevNameSelector": "Dual port serial", "resourceName": "intel.com/Dual_port_serial"},
        {"mdevNameSelector": "GRID T4-2Q", "resourceName": "intel.com/GRID_T4-2Q"}]


def test_nova_reads_the_mdev_types_with_its_own_options(mdev_host: Path) -> None:
    text = export(mdev_host, "nova")
    assert "[devices]\nenabled_mdev_types = nvidia-226\n" in text
    found = nova_matches(mdev_host, facts_of(mdev_host))
    # PCI parents only: mtty's type is left out (with a notice), the T4's two counted
    assert found["mdev_types"] == {"nvidia-226": {"device_addresses": ["0000:3b:00.0"],
                                                  "max_instances": 2}}
    r = pcimgr(mdev_host, "export", "nova")
    assert "mdev type mtty-2: its parents are not PCI functions" in r.stderr


@pytest.mark.parametrize("field,value,words", [
    ("uuid", "not-a-uuid", "is not an mdev UUID"),
    ("type", "../x", "is not an mdev type's name"),
    ("start", "always", "is not auto or manual"),
    ("pci", "04:00.0", "is not a PCI address as pcimgr writes it"),
])
def test_facts_with_a_damaged_mdev_are_refused(mdev_host: Path, tmp_path: Path, field: str,
                                               value: str, words: str) -> None:
    facts = facts_of(mdev_host)
    facts["mdevs"][0][field] = value
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    r = CliRunner().invoke(cli, ["export", "nova", "--facts", str(path)])
    assert r.exit_code == 2 and words in r.output and f"mdevs[0].{field}" in r.output


@pytest.fixture(scope="module")
def vgpu_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 'modern' host with the L4's two VFs defined (on nvidia) with an 8 GB vGPU type."""
    return prepared(tmp_path_factory.mktemp("exports") / "modern",
                    ("define", "81:00.0", "--vfs", "2", "--vf-driver", "host", "--vf", "0",
                     "--vgpu-type", "1049"),
                    ("define", "81:00.0", "--vf", "1", "--vgpu-type", "1049"),
                    ("apply",))


def test_kubevirt_permits_the_defined_vgpu_types_as_external_devices(vgpu_host: Path) -> None:
    patch = json.loads(export(vgpu_host, "kubevirt", "--resource-prefix", "nvidia.com"))
    jsonschema.validate(patch, schemas.KUBEVIRT_PATCH)
    devices = patch["spec"]["configuration"]["permittedHostDevices"]["pciHostDevices"]
    assert {"pciVendorSelector": "10DE:27B8", "resourceName": "nvidia.com/NVIDIA_L4-8Q",
            "externalResourceProvider": True} in devices
    facts = facts_of(vgpu_host)
    (d,) = [d for d in facts["definitions"] if d["address"] == "0000:81:00.0"]
    assert d["vf"]["0"] == {"vgpu_type": 1049, "vgpu_name": "NVIDIA L4-8Q"} and d["ok"]


def test_facts_with_a_damaged_vgpu_setting_are_refused(vgpu_host: Path, tmp_path: Path) -> None:
    facts = facts_of(vgpu_host)
    (d,) = [d for d in facts["definitions"] if d["address"] == "0000:81:00.0"]
    d["vf"]["0"]["vgpu_name"] = "L4\x1b[31m"
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    r = CliRunner().invoke(cli, ["export", "kubevirt", "--facts", str(path)])
    assert r.exit_code == 2 and ".vf.0.vgpu_name" in r.output
