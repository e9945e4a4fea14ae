"""Write a simulated host for a profile: `pcimgr sim create DIR --profile NAME`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput
from pcimgr.sim import boot, tree
from pcimgr.sim import desktop as sim_desktop
from pcimgr.sim import mdev as sim_mdev
from pcimgr.sim.kernel import SimulatedKernel
from pcimgr.sim.marker import MARKER
from pcimgr.sim.profiles import DeviceSpec, MdevParentSpec, Profile


def build(root: str, profile: Profile, iommu: bool | None = None) -> None:
    root = os.path.abspath(root)
    if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
        raise BadInput(f"{root} exists and is not an empty directory; "
                       "choose a new path for the simulated host")
    iommu = profile.iommu if iommu is None else iommu
    for d in ("devices", tree.DEVICES, tree.DRIVERS, tree.GROUPS, "dev/vfio", "class/net",
              "class/block", "devices/virtual/net", "devices/virtual/block"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for attr, text in (("drivers_probe", ""), ("drivers_autoprobe", "1\n"), ("rescan", "")):
        with open(os.path.join(root, "bus/pci", attr), "w") as f:
            f.write(text)
    for driver in profile.drivers:
        tree.create_driver(root, driver)
    if "vfio-pci" in profile.drivers:  # vfio loaded: its class is there, empty or not
        open(os.path.join(root, "dev/vfio/vfio"), "w").close()
        os.makedirs(os.path.join(root, "class/vfio-dev"))
    if profile.host.vfio_cdev:  # IOMMUFD
        open(os.path.join(root, "dev/iommu"), "w").close()
    if profile.host.vhost_net:
        open(os.path.join(root, "dev/vhost-net"), "w").close()
    if iommu:  # as Linux lays it out: the unit under devices/virtual, its class a link
        os.makedirs(os.path.join(root, "devices/virtual/iommu/dmar0"))
        os.makedirs(os.path.join(root, "class/iommu"), exist_ok=True)
        os.symlink("../../devices/virtual/iommu/dmar0", os.path.join(root, "class/iommu/dmar0"))
    _write_marker(root, profile, iommu)
    boot.write(root, _host_facts(profile, iommu))  # /etc's boot files, /proc/cpuinfo

    specs = sorted(profile.devices, key=lambda s: _depth(s, profile))
    secondary = _secondary_buses(profile)
    populated: set[tuple[int, int]] = set()  # buses holding a function, in enumeration order
    for spec in specs:
        address = PciAddress.parse(spec.address)
        parent = (tree.root_bus_dir(root, address.domain) if spec.parent is None
                  else tree.device_dir(root, spec.parent))
        sriov = spec.sriov
        bus = (address.domain, address.bus)
        fn = tree.Function(
            address, spec.vendor, spec.device, spec.class_code, spec.revision, spec.subsystem,
            spec.numa_node, spec.is_bridge, secondary.get(spec.address, 0), spec.boot_vga,
            (sriov.total, sriov.offset, sriov.stride, 0, sriov.vf_device) if sriov else None,
            spec.capabilities, alone_on_bus=spec.parent is not None and bus not in populated)
        populated.add(bus)
        tree.create_function(root, parent, fn, spec.iommu_group if iommu else None)

    if profile.desktop is not None:
        gpu = profile.desktop.boot_gpu
        sim_desktop.lay_out(root, profile.desktop, {gpu: "80000000-8fffffff"} if gpu else {})
    kernel = SimulatedKernel(root)
    for spec in specs:
        if spec.driver:
            kernel._attach(PciAddress.parse(spec.address), spec.driver)
    for spec in specs:
        if spec.sriov and spec.sriov.numvfs:
            kernel._enable_vfs(PciAddress.parse(spec.address), spec.sriov.numvfs)
            for index, driver in spec.sriov.vf_bound:
                _bind_by_override(root, kernel, spec.address, index, driver)
    for name, (kind, lowers) in profile.host.net_stacks.items():
        tree.stack_net(root, name, kind, lowers)
    for name, (dm_name, slaves) in profile.host.block_stacks.items():
        tree.stack_block(root, name, dm_name, slaves)
    for mparent in profile.mdev_parents:
        sim_mdev.register_parent(root, os.path.join(root, mparent.directory) if mparent.directory
                                 else tree.device_dir(root, mparent.name), mparent.name,
                                 _mdev_spec(mparent))
    _numa_nodes(root, profile)


def _bind_by_override(root: str, kernel: SimulatedKernel, pf: str, index: int,
                      driver: str) -> None:
    """What `driverctl set-override VF DRIVER` left: the override, then the driver."""
    vf = PciAddress.parse(os.path.basename(os.readlink(os.path.join(
        tree.device_dir(root, pf), f"virtfn{index}"))))
    kernel._detach(vf)
    tree.set_attr(root, vf, "driver_override", driver)
    kernel._attach(vf, driver)


def _numa_nodes(root: str, profile: Profile) -> None:
    """devices/system/node/nodeN/cpulist for the nodes the functions are on: 8 CPUs each,
    numbered as Linux numbers a two-socket host's (node 0: 0-7, node 1: 8-15)."""
    for node in sorted({max(s.numa_node, 0) for s in profile.devices}):
        d = os.path.join(root, "devices/system/node", f"node{node}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "cpulist"), "w") as f:
            f.write(f"{8 * node}-{8 * node + 7}\n")


def _write_marker(root: str, profile: Profile, iommu: bool) -> None:
    devices = {}
    for spec in profile.devices:
        entry: dict = {"native_driver": spec.native, "netdev": spec.netdev,
                       "disks": list(spec.disks), "net_via": list(spec.net_via),
                       "disk_via": list(spec.disk_via), "framebuffer": spec.framebuffer,
                       "drm": list(spec.drm), "sound": list(spec.sound)}
        if spec.sriov:
            entry["sriov"] = asdict(spec.sriov) | {
                "configurable_by": list(spec.sriov.configurable_by)}
        devices[spec.address] = entry
    with open(os.path.join(root, MARKER), "w") as f:
        json.dump({"format": 1, "profile": profile.name, "description": profile.description,
                   "iommu": iommu, "devices": devices, "host": _host_facts(profile, iommu),
                   "mdev_parents": {p.name: _mdev_spec(p) for p in profile.mdev_parents}},
                  f, indent=1, sort_keys=True)


def _mdev_spec(parent: MdevParentSpec) -> dict:
    return {"driver": parent.driver, "capacity": parent.capacity,
            "homogeneous": parent.homogeneous, "attribute_groups": list(parent.attribute_groups),
            "types": {t.id: {"name": t.name, "description": t.description,
                             "device_api": t.device_api, "cost": t.cost, "max": t.max}
                      for t in parent.types}}


def _host_facts(profile: Profile, iommu: bool) -> dict:
    """Booted without the IOMMU: no intel_iommu=on on the command line, no remapping."""
    facts = asdict(profile.host)
    if not iommu:
        facts["cmdline"] = " ".join(w for w in facts["cmdline"].split()
                                    if not w.startswith(("intel_iommu", "amd_iommu", "iommu=")))
        facts["interrupt_remapping"] = False
    return facts


def _depth(spec: DeviceSpec, profile: Profile) -> int:
    by_address = {s.address: s for s in profile.devices}
    depth = 0
    while spec.parent is not None:
        spec = by_address[spec.parent]
        depth += 1
    return depth


def _secondary_buses(profile: Profile) -> dict[str, int]:
    """A bridge's secondary bus is the bus its children sit on."""
    return {s.parent: PciAddress.parse(s.address).bus for s in profile.devices if s.parent}
