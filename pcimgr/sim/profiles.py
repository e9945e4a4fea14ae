"""Simulated host profiles: which functions a host has and how its kernel treats them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pcimgr.core.errors import NotFound
from pcimgr.core.model import BRIDGE_CLASSES
from pcimgr.sim.configspace import Caps
from pcimgr.sim.desktop import DesktopSpec, UnitSpec
from pcimgr.sim.tree import NVME_SUBSYSTEM


@dataclass(frozen=True)
class VgpuSpec:
    """NVIDIA's vendor vGPU interface on the VFs (sim/vgpu.py has the rule)."""

    framebuffer: int                           # GB the VFs' vGPUs share
    types: tuple[tuple[int, str, int], ...]    # ID, name, framebuffer GB


@dataclass(frozen=True)
class SriovSpec:
    total: int                      # TotalVFs in the capability
    offset: int
    stride: int
    vf_device: str
    vf_driver: str | None           # native driver of the VFs
    driver_total: dict[str, int] = field(default_factory=dict)  # a PF driver's own limit
    numvfs: int = 0                 # VFs present when the host is built
    configurable_by: tuple[str, ...] = ()  # PF drivers that implement sriov_configure
    vf_config: tuple[tuple[str, int], ...] = ()  # (MAC, VLAN) of the VFs present at build
    vf_settings: tuple[str, ...] = ("mac", "vlan", "spoofchk", "trust", "link_state")
    # the VF driver registers its VFs with VFIO itself (NVIDIA's vGPU VFs on `nvidia`)
    vf_vfio_provider: bool = False
    # VFs an administrator had bound elsewhere when the host is built: index -> driver
    # (through driver_override, as a variant driver must be)
    vf_bound: tuple[tuple[int, str], ...] = ()
    vgpu: VgpuSpec | None = None


@dataclass(frozen=True)
class DeviceSpec:
    address: str
    vendor: str
    device: str
    class_code: int
    driver: str | None              # bound when the host is built
    iommu_group: int | None
    subsystem: tuple[str, str] = ("0000", "0000")
    revision: int = 0
    native_driver: str | None = None  # what a probe without override binds; default: driver
    parent: str | None = None       # upstream bridge; decides the directory nesting
    numa_node: int = -1
    netdev: str | None = None       # interface name while a NIC driver is bound
    sriov: SriovSpec | None = None
    boot_vga: bool | None = None
    disks: tuple[str,
                 ...] = ()     # block devices while the native driver is bound: disk, partitions
    # devices between the function and its interface or disk (sim/tree.py Children)
    net_via: tuple[str, ...] = ()
    disk_via: tuple[str, ...] = ("host0",)
    framebuffer: str | None = None  # fbN while the native driver is bound
    drm: tuple[str, ...] = ()       # DRM nodes while it is bound (card0, renderD128)
    sound: tuple[str, ...] = ()     # ALSA card and nodes while it is bound (card1, controlC1)
    # PCIe capabilities (port type, link, FLR, PM, ACS); None: a root port with ACS for a
    # bridge, else a PCIe endpoint (integrated on the root bus) that resets through PM
    caps: Caps | None = None

    @property
    def capabilities(self) -> Caps:
        if self.caps is not None:
            return self.caps
        if self.is_bridge:
            return Caps("root-port", acs=ACS_PORT)
        return Caps("endpoint" if self.parent else "integrated-endpoint", pm_soft_reset=True)

    @property
    def native(self) -> str | None:
        return self.native_driver if self.native_driver is not None else self.driver

    @property
    def is_bridge(self) -> bool:
        return self.class_code >> 8 in BRIDGE_CLASSES


@dataclass(frozen=True)
class HostFacts:
    """What a real host reads from netlink and /proc, declared for a simulated one."""

    addresses: dict[str, list[str]] = field(default_factory=dict)  # ifname -> CIDRs
    routes: dict[str, list[str]] = field(default_factory=dict)     # ifname -> destinations
    mounts: dict[str, str] = field(default_factory=dict)           # block device -> mount point
    swaps: list[str] = field(default_factory=list)                 # block devices used as swap
    open_blocks: dict[str, list[str]] = field(default_factory=dict)  # block -> "comm[pid]"
    network_mounts: dict[str, str] = field(default_factory=dict)   # server -> what is mounted
    routes_to: dict[str, str] = field(default_factory=dict)        # server -> `ip route get` dev
    # stacks the builder lays out in sysfs, in order (a bond before the bridge on it):
    # name -> (kind, lower interfaces); dm device -> (its /dev/mapper name, slaves)
    net_stacks: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    block_stacks: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    cmdline: str = ("BOOT_IMAGE=/boot/vmlinuz-6.1.0-26-amd64 root=/dev/nvme0n1p2 ro quiet "
                    "intel_iommu=on iommu=pt")                       # /proc/cmdline
    interrupt_remapping: bool = True                                # IR-* irqchips
    modules: tuple[str, ...] = ("vfio-pci", "vfio_iommu_type1", "vhost_net", "pci-stub")
    vhost_net: bool = True                                          # /dev/vhost-net
    # the boot files sim/boot.py lays out (doctor --fix edits them)
    cpu_vendor: str = "GenuineIntel"                                # /proc/cpuinfo vendor_id
    bootloader: str = "grub"               # grub (Debian), systemd-boot, grubby (Fedora), none
    initramfs: str = "initramfs-tools"     # initramfs-tools, dracut, none
    # lines of the kernel's modules.alias (lib/modules/RELEASE/modules.alias): VFIO
    # variant drivers declare theirs as `alias vfio_pci:... MODULE`
    modules_alias: tuple[str, ...] = ()
    vfio_cdev: bool = False  # IOMMUFD's /dev/iommu and /dev/vfio/devices/vfioN (>= 6.6)


@dataclass(frozen=True)
class MdevTypeSpec:
    id: str                          # the directory: "<driver>-<type>"
    name: str
    device_api: str
    cost: int                        # units of the parent's capacity one instance takes
    description: str | None = None   # only where the parent's driver gives one
    max: int | None = None           # a limit of this type's own


@dataclass(frozen=True)
class MdevParentSpec:
    """A parent registered with the mdev core (sim/mdev.py has the capacity rule)."""

    name: str                        # its class/mdev_bus entry: a PCI address, or a name
    driver: str                      # the mdev driver its mdevs bind to
    capacity: int
    types: tuple[MdevTypeSpec, ...]
    directory: str | None = None     # a virtual parent's directory; a PCI one's is its own
    homogeneous: bool = False        # once one type has an instance, the others have none
    attribute_groups: tuple[str, ...] = ()  # directories the driver adds to each mdev


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    devices: tuple[DeviceSpec, ...]
    drivers: tuple[str, ...]        # loaded driver modules (directories under bus/pci/drivers)
    iommu: bool = True
    host: HostFacts = HostFacts()
    mdev_parents: tuple[MdevParentSpec, ...] = ()
    desktop: DesktopSpec | None = None  # consoles, boot framebuffer, services (sim/desktop.py)


NET = 0x020000
# ACS as QEMU's pcie-root-port has it (lab: ACSCap 0x5f, Linux enables SV RR CR UF)
ACS_PORT = 0x5F
NO_ACS_PORT = Caps("root-port")  # consumer CPU and some PCH ports: no ACS capability
NET_DRIVERS = ("e1000e", "igb", "igbvf", "i40e", "iavf", "mlx5_core", "e1000")
STUBS = ("vfio-pci", "pci-stub")
# igb has no ndo_set_vf_link_state: `ip link set PF vf N state ...` is EOPNOTSUPP (lab)
IGB_VF_SETTINGS = ("mac", "vlan", "spoofchk", "trust")


def _root_port(address: str, group: int, device: str = "a110",
               caps: Caps | None = None) -> DeviceSpec:
    return DeviceSpec(address, "8086", device, 0x060400, "pcieport", group, numa_node=0,
                      caps=caps)


def demo() -> Profile:
    """The host from our users' example, plus the hardware they asked about."""
    rp = _root_port
    # ports with ACS get groups of their own; 00:01.0 (the CPU's x16 port) and 00:1b.0 have
    # none, so what is below them shares their group. The X710 trained at x4 in an x8 slot;
    # the GPU has neither FLR nor a PM reset (No_Soft_Reset): only its bus can be reset.
    gen1 = (2.5, 4, 2.5, 4)
    devices = (
        DeviceSpec("0000:00:00.0", "8086", "3ec2", 0x060000, "skl_uncore", 0,
                   subsystem=("1028", "0869"), revision=0x07, numa_node=0),
        rp("0000:00:01.0", 1, "1901", caps=Caps("root-port", (8.0, 16, 8.0, 16))),
        DeviceSpec("0000:01:00.0", "10de", "1b81", 0x030000, "nouveau", 1,
                   subsystem=("10de", "119d"), revision=0xa1, parent="0000:00:01.0",
                   numa_node=0, boot_vga=False,
                   caps=Caps("endpoint", (8.0, 16, 8.0, 16), pm_soft_reset=False)),
        DeviceSpec("0000:01:00.1", "10de", "10f0", 0x040300, "snd_hda_intel", 1,
                   subsystem=("10de", "119d"), revision=0xa1, parent="0000:00:01.0",
                   numa_node=0, caps=Caps("endpoint", (8.0, 16, 8.0, 16), pm_soft_reset=False)),
        DeviceSpec("0000:00:02.0", "8086", "3e92", 0x030000, "i915", 2,
                   subsystem=("1028", "0869"), numa_node=0, boot_vga=True),
        rp("0000:00:1b.0", 3, "a340", caps=Caps("root-port", (8.0, 4, 8.0, 4))),
        DeviceSpec("0000:02:00.0", "144d", "a808", 0x010802, "nvme", 3,
                   subsystem=("144d", "a801"), parent="0000:00:1b.0", numa_node=0,
                   disks=("nvme0n1", "nvme0n1p1", "nvme0n1p2", "nvme0n1p3"),
                   disk_via=(NVME_SUBSYSTEM,),
                   caps=Caps("endpoint", (8.0, 4, 8.0, 4), flr=True, pm_soft_reset=True)),
        rp("0000:00:1c.0", 4, "a338", caps=Caps("root-port", (8.0, 4, 2.5, 4), acs=ACS_PORT)),
        DeviceSpec("0000:04:00.0", "8086", "105e", 0x020000, "e1000e", 5,
                   subsystem=("8086", "115e"), revision=0x06, parent="0000:00:1c.0",
                   numa_node=0, netdev="enp4s0f0", caps=Caps("endpoint", gen1, pm_soft_reset=True)),
        DeviceSpec("0000:04:00.1", "8086", "105e", 0x020000, "e1000e", 5,
                   subsystem=("8086", "115e"), revision=0x06, parent="0000:00:1c.0",
                   numa_node=0, netdev="enp4s0f1", caps=Caps("endpoint", gen1, pm_soft_reset=True)),
        rp("0000:00:1c.4", 6, "a33c", caps=Caps("root-port", (8.0, 4, 2.5, 4), acs=ACS_PORT)),
        DeviceSpec("0000:05:00.0", "8086", "10c9", 0x020000, "igb", 7,
                   subsystem=("8086", "a03c"), revision=0x01, parent="0000:00:1c.4",
                   numa_node=0, netdev="enp5s0f0",
                   sriov=SriovSpec(total=8, driver_total={"igb": 7}, offset=128, stride=2,
                                   vf_device="10ca", vf_driver="igbvf",
                                   configurable_by=("igb",),
                                   vf_settings=IGB_VF_SETTINGS),
                   caps=Caps("endpoint", gen1, flr=True, pm_soft_reset=True)),
        rp("0000:00:1d.0", 8, "a330", caps=Caps("root-port", (8.0, 8, 8.0, 4), acs=ACS_PORT)),
        DeviceSpec("0000:06:00.0", "8086", "1572", 0x020000, "i40e", 9,
                   subsystem=("8086", "0000"), revision=0x02, parent="0000:00:1d.0",
                   numa_node=0, netdev="enp6s0f0",
                   sriov=SriovSpec(total=64, offset=16, stride=1, vf_device="154c",
                                   vf_driver="iavf", configurable_by=("i40e",)),
                   caps=Caps("endpoint", (8.0, 8, 8.0, 4), flr=True)),
        rp("0000:00:1d.4", 10, "a334", caps=Caps("root-port", (8.0, 16, 8.0, 16), acs=ACS_PORT)),
        DeviceSpec("0000:07:00.0", "15b3", "1017", 0x020000, "mlx5_core", 11,
                   subsystem=("15b3", "0007"), parent="0000:00:1d.4", numa_node=0,
                   netdev="enp7s0f0np0",
                   sriov=SriovSpec(total=8, offset=2, stride=1, vf_device="1018",
                                   vf_driver="mlx5_core", numvfs=2,
                                   configurable_by=("mlx5_core",),
                                   vf_config=(("52:54:00:6b:3c:01", 100),
                                              ("52:54:00:6b:3c:02", 0))),
                   caps=Caps("endpoint", (8.0, 16, 8.0, 16), flr=True, acs=0x1D)),
        # The chipset: LPC, SMBus and the management NIC share one group.
        DeviceSpec("0000:00:1f.0", "8086", "a306", 0x060100, None, 12,
                   subsystem=("1028", "0869"), revision=0x10, numa_node=0,
                   caps=Caps("integrated-endpoint")),
        DeviceSpec("0000:00:1f.4", "8086", "a323", 0x0c0500, "i801_smbus", 12,
                   subsystem=("1028", "0869"), revision=0x10, numa_node=0,
                   caps=Caps("integrated-endpoint")),
        DeviceSpec("0000:00:1f.6", "8086", "15bb", 0x020000, "e1000e", 12,
                   subsystem=("1028", "0869"), revision=0x10, numa_node=0, netdev="eno1",
                   caps=Caps("integrated-endpoint", flr=True, pm_soft_reset=True)),
    )
    drivers = ("pcieport", "skl_uncore", "nouveau", "snd_hda_intel", "i915", "nvme",
               "i801_smbus") + NET_DRIVERS + STUBS
    host = HostFacts(addresses={"eno1": ["192.0.2.10/24"]},
                     routes={"eno1": ["default", "192.0.2.0/24"]},
                     mounts={"nvme0n1p2": "/", "nvme0n1p1": "/boot/efi"}, swaps=["nvme0n1p3"])
    return Profile("demo", "Dual-port 82571EB at 04:00.0/04:00.1, 82576, X710, ConnectX-5, "
                   "GPU with audio, NVMe, chipset with management NIC", devices, drivers,
                   host=host)


def lab() -> Profile:
    """The QEMU real-kernel lab guest (tests/lab), as Linux 6.1 enumerated it there."""
    rh, q35 = ("1af4", "1100"), "8086"
    # capabilities as Linux 6.1 read them there (tests/lab/fixtures/capabilities.json)
    conventional, x1 = Caps(None), (2.5, 1, 2.5, 1)
    port = Caps("root-port", (16.0, 32, 2.5, 1), acs=ACS_PORT)
    devices = (
        DeviceSpec("0000:00:00.0", q35, "29c0", 0x060000, None, 0, subsystem=rh, caps=conventional),
        DeviceSpec("0000:00:01.0", "1af4", "1009", 0x000200, "virtio-pci", 1,
                   subsystem=("1af4", "0009"), caps=conventional),
        DeviceSpec("0000:00:02.0", "1af4", "1009", 0x000200, "virtio-pci", 2,
                   subsystem=("1af4", "0009"), caps=conventional),
        DeviceSpec("0000:00:03.0", "1b36", "000c", 0x060400, "pcieport", 3,
                   subsystem=("1b36", "0000"), caps=port),
        DeviceSpec("0000:01:00.0", "8086", "10c9", NET, "igb", 11, subsystem=rh, revision=0x01,
                   parent="0000:00:03.0", netdev="enp1s0",
                   sriov=SriovSpec(total=8, driver_total={"igb": 7}, offset=128, stride=2,
                                   vf_device="10ca", vf_driver="igbvf",
                                   configurable_by=("igb",),
                                   vf_settings=IGB_VF_SETTINGS),
                   caps=Caps("endpoint", x1, flr=True, pm_soft_reset=True)),
        # pcie-pci-bridge: no driver binds it; its group holds both e1000
        DeviceSpec("0000:00:04.0", "1b36", "000e", 0x060400, None, 4,
                   caps=Caps("pcie-to-pci-bridge", x1, pm_soft_reset=True)),
        DeviceSpec("0000:02:01.0", "8086", "100e", NET, "e1000", 4, subsystem=rh,
                   revision=0x03, parent="0000:00:04.0", netdev="ens1", caps=conventional),
        DeviceSpec("0000:02:02.0", "8086", "100e", NET, "e1000", 4, subsystem=rh,
                   revision=0x03, parent="0000:00:04.0", netdev="ens2", caps=conventional),
        DeviceSpec("0000:00:05.0", "1b36", "000c", 0x060400, "pcieport", 5,
                   subsystem=("1b36", "0000"), caps=port),
        DeviceSpec("0000:03:00.0", "8086", "10d3", NET, "e1000e", 12, subsystem=("8086", "0000"),
                   parent="0000:00:05.0", netdev="enp3s0f0",
                   caps=Caps("endpoint", x1, pm_soft_reset=True)),
        DeviceSpec("0000:03:00.1", "8086", "10d3", NET, "e1000e", 12, subsystem=("8086", "0000"),
                   parent="0000:00:05.0", netdev="enp3s0f1",
                   caps=Caps("endpoint", x1, pm_soft_reset=True)),
        # the shapes of a host's own network and disks (tests/lab/test_lab_hostuse.py)
        DeviceSpec("0000:00:06.0", "1af4", "1000", NET, "virtio-pci", 6,
                   subsystem=("1af4", "0001"), netdev="enp0s6", net_via=("virtio2",),
                   caps=conventional),
        DeviceSpec("0000:00:07.0", "1b36", "000d", 0x0c0330, "xhci_hcd", 7, subsystem=rh,
                   revision=0x01, netdev="enx40540012345c", net_via=("usb1", "1-1", "1-1:1.0"),
                   caps=Caps("integrated-endpoint")),
        DeviceSpec("0000:00:08.0", "1b36", "0010", 0x010802, "nvme", 8, subsystem=rh,
                   revision=0x02, disks=("nvme0n1", "nvme0n1p1", "nvme0n1p2", "nvme0n1p3"),
                   disk_via=(NVME_SUBSYSTEM,),
                   caps=Caps("integrated-endpoint", flr=True, pm_soft_reset=False)),
        DeviceSpec("0000:00:09.0", "1af4", "1004", 0x010000, "virtio-pci", 9,
                   subsystem=("1af4", "0008"), disks=("sda", "sda1"),
                   disk_via=("virtio3", "host0", "target0:0:0", "0:0:0:0"), caps=conventional),
        DeviceSpec("0000:00:1f.0", q35, "2918", 0x060100, "lpc_ich", 10, subsystem=rh,
                   revision=0x02, caps=conventional),
        DeviceSpec("0000:00:1f.2", q35, "2922", 0x010601, "ahci", 10, subsystem=rh,
                   revision=0x02, caps=conventional),
        DeviceSpec("0000:00:1f.3", q35, "2930", 0x0c0500, "i801_smbus", 10, subsystem=rh,
                   revision=0x02, caps=conventional),
    )
    # vfio-pci as after `modprobe vfio-pci`, which the lab does first
    drivers = ("pcieport", "shpchp", "virtio-pci", "lpc_ich", "ahci", "i801_smbus",
               "igb", "igbvf", "e1000", "e1000e", "xhci_hcd", "nvme", "vfio-pci")
    return Profile("lab", "The QEMU lab guest: igb (SR-IOV) behind a root port, two e1000 "
                   "behind a PCIe-to-PCI bridge, dual-function e1000e, virtio-net, a USB NIC "
                   "on xHCI, NVMe (native multipath), virtio-scsi disk", devices, drivers)


def server() -> Profile:
    """A host whose own network and disks sit on the shapes real servers have: a virtio NIC
    with the default route, a USB NIC that reaches the NFS server, NVMe under native
    multipath with root on LVM, a disk below a SCSI host, bonded NICs under a bridge with
    a VLAN, an SR-IOV VF the host uses, a framebuffer console, and a free 82571EB pair."""
    rh = ("1af4", "1100")
    rp = _root_port
    devices = (
        DeviceSpec("0000:00:00.0", "8086", "3ec2", 0x060000, None, 0, subsystem=rh),
        DeviceSpec("0000:00:02.0", "8086", "3e92", 0x030000, "i915", 1, subsystem=rh,
                   boot_vga=True, framebuffer="fb0"),
        DeviceSpec("0000:00:03.0", "1af4", "1000", NET, "virtio-pci", 2,
                   subsystem=("1af4", "0001"), netdev="eth0", net_via=("virtio0",),
                   caps=Caps(None)),  # conventional PCI, as QEMU's virtio in the lab
        DeviceSpec("0000:00:05.0", "1af4", "1004", 0x010000, "virtio-pci", 3,
                   subsystem=("1af4", "0008"), disks=("sda", "sda1"),
                   disk_via=("virtio1", "host0", "target0:0:0", "0:0:0:0"), caps=Caps(None)),
        DeviceSpec("0000:00:14.0", "8086", "a36d", 0x0c0330, "xhci_hcd", 4, subsystem=rh,
                   netdev="enx00e04c680001", net_via=("usb2", "2-1", "2-1:1.0")),
        rp("0000:00:1b.0", 5, "a340"),
        DeviceSpec("0000:01:00.0", "144d", "a808", 0x010802, "nvme", 6,
                   subsystem=("144d", "a801"), parent="0000:00:1b.0", numa_node=0,
                   disks=("nvme0n1", "nvme0n1p1", "nvme0n1p2", "nvme0n1p3"),
                   disk_via=(NVME_SUBSYSTEM,)),
        rp("0000:00:1c.0", 7, "a338"),
        DeviceSpec("0000:02:00.0", "8086", "10fb", NET, "ixgbe", 8, subsystem=("8086", "000c"),
                   parent="0000:00:1c.0", numa_node=0, netdev="enp2s0f0"),
        DeviceSpec("0000:02:00.1", "8086", "10fb", NET, "ixgbe", 8, subsystem=("8086", "000c"),
                   parent="0000:00:1c.0", numa_node=0, netdev="enp2s0f1"),
        rp("0000:00:1c.4", 9, "a33c"),
        DeviceSpec("0000:03:00.0", "8086", "10c9", NET, "igb", 10, subsystem=("8086", "a03c"),
                   revision=0x01, parent="0000:00:1c.4", numa_node=0, netdev="enp3s0f0",
                   sriov=SriovSpec(total=8, driver_total={"igb": 7}, offset=128, stride=2,
                                   vf_device="10ca", vf_driver="igbvf", numvfs=2,
                                   configurable_by=("igb",), vf_settings=IGB_VF_SETTINGS)),
        rp("0000:00:1d.0", 11, "a330"),
        DeviceSpec("0000:04:00.0", "8086", "105e", NET, "e1000e", 12, subsystem=("8086", "115e"),
                   revision=0x06, parent="0000:00:1d.0", numa_node=0, netdev="enp4s0f0"),
        DeviceSpec("0000:04:00.1", "8086", "105e", NET, "e1000e", 12, subsystem=("8086", "115e"),
                   revision=0x06, parent="0000:00:1d.0", numa_node=0, netdev="enp4s0f1"),
        DeviceSpec("0000:00:1f.0", "8086", "a306", 0x060100, None, 13, subsystem=rh),
        DeviceSpec("0000:00:1f.4", "8086", "a323", 0x0c0500, "i801_smbus", 13, subsystem=rh),
    )
    drivers = ("pcieport", "i915", "virtio-pci", "xhci_hcd", "nvme", "ixgbe", "i801_smbus") \
        + NET_DRIVERS + STUBS
    host = HostFacts(
        addresses={"eth0": ["203.0.113.10/24", "2001:db8::10/64"],
                   "enx00e04c680001": ["198.51.100.20/24"],
                   "br0.100": ["192.0.2.30/24"], "enp3s0f0v0": ["192.0.2.40/24"]},
        routes={"eth0": ["default", "2001:db8::/64"], "br0.100": ["192.0.2.0/24"]},
        mounts={"dm-0": "/", "nvme0n1p1": "/boot/efi", "sda1": "/srv"},
        swaps=["nvme0n1p3"],
        network_mounts={"198.51.100.5": "NFS 198.51.100.5:/export/home on /home"},
        routes_to={"198.51.100.5": "enx00e04c680001"},
        net_stacks={"bond0": ("bond", ["enp2s0f0", "enp2s0f1"]), "br0": ("bridge", ["bond0"]),
                    "br0.100": ("vlan", ["br0"])},
        block_stacks={"dm-0": ("vg0-root", ["nvme0n1p2"])})
    return Profile("server", "The host's own network and disks on virtio, USB, NVMe multipath, "
                   "LVM, SCSI, bond+bridge+VLAN and an SR-IOV VF; a free 82571EB pair",
                   devices, drivers, host=host)


# modules.alias lines as depmod writes them for the variant drivers (scripts/mod/file2alias.c:
# PCI_DRIVER_OVERRIDE_DEVICE_VFIO gives the "vfio_pci:" prefix), among ordinary ones
MODERN_ALIASES = (
    "alias pci:v000015B3d0000101Dsv*sd*bc*sc*i* mlx5_core",
    "alias pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_core",
    "alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci",
    "alias vfio_pci:v000015B3d00001018sv*sd*bc*sc*i* mlx5_vfio_pci",
    "alias pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_pci",
    "alias vfio_pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_vfio_pci",
    "alias pci:v000010DEd*sv*sd*bc03sc*i* nvidia",
    "alias pci:v00008086d000010CAsv*sd*bc*sc*i* igbvf",
    "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci",
)


# NVIDIA L4 (24 GB) time-sliced vGPU types; the IDs are illustrative (the driver's own
# differ by release), the layout is the vendor VFIO interface's
L4_VGPU = VgpuSpec(24, tuple((1044 + i, f"NVIDIA L4-{gb}Q", gb)
                             for i, gb in enumerate((1, 2, 3, 4, 6, 8, 12, 24))))


def modern() -> Profile:
    """A 2025 host (Linux 6.12, IOMMUFD): a ConnectX-6 Dx whose first VF is on the
    mlx5_vfio_pci variant (live migration), an NVIDIA L4 whose vGPU VFs stay on `nvidia`,
    which registers them with VFIO itself, a virtio-net SR-IOV NIC whose VFs have the
    virtio_vfio_pci variant available but are on virtio-pci, and an 82576 whose VFs have
    no variant (plain vfio-pci)."""
    rp = _root_port
    cx6 = Caps("endpoint", (16.0, 16, 16.0, 16), flr=True, acs=0x1D)
    devices = (
        rp("0000:00:01.0", 0, caps=Caps("root-port", (16.0, 16, 16.0, 16), acs=ACS_PORT)),
        DeviceSpec("0000:41:00.0", "15b3", "101d", NET, "mlx5_core", 1,
                   subsystem=("15b3", "0016"), parent="0000:00:01.0", numa_node=0,
                   netdev="enp65s0f0np0",
                   sriov=SriovSpec(total=8, offset=2, stride=1, vf_device="101e",
                                   vf_driver="mlx5_core", numvfs=2,
                                   configurable_by=("mlx5_core",),
                                   vf_bound=((0, "mlx5_vfio_pci"),)),
                   caps=cx6),
        rp("0000:00:02.0", 4, caps=Caps("root-port", (16.0, 16, 16.0, 16), acs=ACS_PORT)),
        DeviceSpec("0000:81:00.0", "10de", "27b8", 0x030200, "nvidia", 5,
                   subsystem=("10de", "16ca"), revision=0xa1, parent="0000:00:02.0",
                   numa_node=0, boot_vga=False,
                   sriov=SriovSpec(total=16, offset=4, stride=1, vf_device="27b8",
                                   vf_driver="nvidia", numvfs=2, configurable_by=("nvidia",),
                                   vf_vfio_provider=True, vgpu=L4_VGPU),
                   caps=Caps("endpoint", (16.0, 16, 16.0, 16), flr=True)),
        rp("0000:00:03.0", 8, caps=Caps("root-port", (8.0, 8, 8.0, 8), acs=ACS_PORT)),
        DeviceSpec("0000:c1:00.0", "1af4", "1041", NET, "virtio-pci", 9,
                   subsystem=("1af4", "1100"), revision=0x01, parent="0000:00:03.0",
                   numa_node=0, netdev="enp193s0", net_via=("virtio0",),
                   sriov=SriovSpec(total=4, offset=1, stride=1, vf_device="1041",
                                   vf_driver="virtio-pci", numvfs=1,
                                   configurable_by=("virtio-pci",), vf_settings=()),
                   caps=Caps("endpoint", (8.0, 8, 8.0, 8), flr=True)),
        rp("0000:00:1c.0", 12, "a338", caps=Caps("root-port", (2.5, 4, 2.5, 4), acs=ACS_PORT)),
        DeviceSpec("0000:02:00.0", "8086", "10c9", NET, "igb", 13, subsystem=("8086", "a03c"),
                   revision=0x01, parent="0000:00:1c.0", numa_node=0, netdev="enp2s0f0",
                   sriov=SriovSpec(total=8, driver_total={"igb": 7}, offset=128, stride=2,
                                   vf_device="10ca", vf_driver="igbvf", numvfs=1,
                                   configurable_by=("igb",), vf_settings=IGB_VF_SETTINGS),
                   caps=Caps("endpoint", (2.5, 4, 2.5, 4), flr=True, pm_soft_reset=True)),
        DeviceSpec("0000:00:1f.0", "8086", "a306", 0x060100, None, 20, numa_node=0,
                   caps=Caps("integrated-endpoint")),
        DeviceSpec("0000:00:1f.6", "8086", "15bb", NET, "e1000e", 20, numa_node=0,
                   netdev="eno1", caps=Caps("integrated-endpoint", flr=True)),
    )
    drivers = ("pcieport", "mlx5_core", "mlx5_vfio_pci", "nvidia", "virtio-pci",
               "virtio_vfio_pci", "igb", "igbvf", "e1000e") + STUBS
    host = HostFacts(
        addresses={"eno1": ["192.0.2.10/24"]}, routes={"eno1": ["default"]},
        cmdline=("BOOT_IMAGE=/boot/vmlinuz-6.12.57+deb13-amd64 root=/dev/sda2 ro quiet "
                 "intel_iommu=on iommu=pt"),
        modules=("vfio-pci", "vfio_iommu_type1", "iommufd", "vhost_net", "pci-stub",
                 "mlx5_vfio_pci", "virtio_vfio_pci"),
        modules_alias=MODERN_ALIASES, vfio_cdev=True)
    return Profile("modern", "Linux 6.12 with IOMMUFD: an mlx5 VF on its VFIO variant, "
                   "NVIDIA vGPU VFs on nvidia (a vendor VFIO provider), virtio-net VFs with "
                   "a variant available, 82576 VFs for plain vfio-pci", devices, drivers,
                   host=host)


# the kernel's sample (samples/vfio-mdev/mtty.c, 6.1): 24 ports, one or two per mdev (lab)
MTTY = MdevParentSpec("mtty", "mtty", 24, (
    MdevTypeSpec("mtty-1", "Single port serial", "vfio-pci", 1),
    MdevTypeSpec("mtty-2", "Dual port serial", "vfio-pci", 2)),
    directory="devices/virtual/mtty/mtty", attribute_groups=("vendor",))


def _gvt_type(n: int, low: int, high: int, resolution: str, weight: int,
              cost: int) -> MdevTypeSpec:
    return MdevTypeSpec(f"i915-GVTg_V5_{n}", f"GVTg_V5_{n}", "vfio-pci", cost,
                        f"low_gm_size: {low}MB\nhigh_gm_size: {high}MB\nfence: 4\n"
                        f"resolution: {resolution}\nweight: {weight}")


def _grid_type(number: int, size: int, kind: str, heads: int, instances: int) -> MdevTypeSpec:
    return MdevTypeSpec(f"nvidia-{number}", f"GRID T4-{size}{kind}", "vfio-pci", size,
                        f"num_heads={heads}, frl_config={60 if kind == 'Q' else 45}, "
                        f"framebuffer={size * 1024}M, max_resolution=5120x2880, "
                        f"max_instance={instances}")


def mdev() -> Profile:
    """Mediated devices (docs/mdev.md): an Intel UHD 630 with GVT-g (i915/kvmgt), an NVIDIA
    Tesla T4 with time-sliced vGPU types (NVIDIA's mdev interface before Ada: one type per
    GPU at a time), and the kernel's mtty sample, as the lab loads it."""
    rp = _root_port
    devices = (
        DeviceSpec("0000:00:02.0", "8086", "3e92", 0x030000, "i915", 0,
                   subsystem=("1028", "0869"), numa_node=0, boot_vga=True),
        rp("0000:00:01.0", 1, "1901", caps=Caps("root-port", (8.0, 16, 8.0, 16),
                                                acs=ACS_PORT)),
        DeviceSpec("0000:3b:00.0", "10de", "1eb8", 0x030200, "nvidia", 2,
                   subsystem=("10de", "12a2"), revision=0xa1, parent="0000:00:01.0",
                   numa_node=0, boot_vga=False,
                   caps=Caps("endpoint", (8.0, 16, 8.0, 16), flr=True)),
        rp("0000:00:1c.0", 3, "a338", caps=Caps("root-port", (2.5, 1, 2.5, 1), acs=ACS_PORT)),
        DeviceSpec("0000:02:00.0", "8086", "10d3", NET, "e1000e", 4, subsystem=("8086", "a01f"),
                   parent="0000:00:1c.0", numa_node=0, netdev="enp2s0",
                   caps=Caps("endpoint", (2.5, 1, 2.5, 1), pm_soft_reset=True)),
    )
    parents = (
        MdevParentSpec("0000:00:02.0", "intel_vgpu_mdev", 2, (
            _gvt_type(4, 128, 512, "1920x1200", 4, 2),
            _gvt_type(8, 64, 384, "1024x768", 2, 1))),
        MdevParentSpec("0000:3b:00.0", "nvidia-vgpu-vfio", 16, (
            _grid_type(222, 1, "B", 4, 16), _grid_type(223, 2, "B", 4, 8),
            _grid_type(225, 1, "Q", 4, 16), _grid_type(226, 2, "Q", 4, 8),
            _grid_type(228, 8, "Q", 4, 2), _grid_type(230, 16, "Q", 4, 1)),
            homogeneous=True),
        MTTY,
    )
    host = HostFacts(addresses={"enp2s0": ["192.0.2.20/24"]}, routes={"enp2s0": ["default"]},
                     modules=("vfio-pci", "vfio_iommu_type1", "mdev", "kvmgt", "mtty",
                              "nvidia-vgpu-vfio", "pci-stub"))
    return Profile("mdev", "Mediated devices: GVT-g on an Intel UHD 630, time-sliced vGPU "
                   "types on an NVIDIA Tesla T4, the kernel's mtty sample", devices,
                   ("pcieport", "i915", "nvidia", "e1000e") + STUBS, host=host,
                   mdev_parents=parents)


_SCALE = re.compile(r"scale:([0-9]+)x([0-9]+)")  # \d would take other scripts' digits


def scale(pfs: int, vfs: int) -> Profile:
    """PFS igb-like physical functions, each with VFS virtual functions already created."""
    if not (1 <= pfs <= 4096 and 0 <= vfs <= 63):
        raise NotFound("scale profile wants scale:PFSxVFS with 1-4096 PFs and 0-63 VFs")
    devices = []
    for i in range(pfs):
        # One root port per bus; a PF at bus:00.0 and its VFs behind it (offset 0x80,
        # stride 1 keeps up to 63 VFs on the same bus).
        domain, bus = divmod(i, 200)
        bus += 1
        port = f"{domain:04x}:00:{i % 200 // 8:02x}.{i % 8:x}"
        devices.append(DeviceSpec(port, "8086", "a110", 0x060400, "pcieport", 2 * i))
        devices.append(DeviceSpec(
            f"{domain:04x}:{bus:02x}:00.0", "8086", "10c9", NET, "igb", 2 * i + 1,
            subsystem=("8086", "a03c"), revision=0x01, parent=port, numa_node=i % 2,
            netdev=f"enp{bus}s0d{domain}" if domain else f"enp{bus}s0",
            sriov=SriovSpec(total=63, offset=0x80, stride=1, vf_device="10ca",
                            vf_driver="igbvf", numvfs=vfs, configurable_by=("igb",),
                            vf_settings=IGB_VF_SETTINGS)))
    return Profile(f"scale:{pfs}x{vfs}", f"{pfs} PFs with {vfs} VFs each", tuple(devices),
                   ("pcieport", "igb", "igbvf") + STUBS)


def desktop() -> Profile:
    """A single-GPU workstation (Linux 6.1, systemd, GDM): a Radeon RX 6800 that is the boot
    display, with fbcon on amdgpu's framebuffer and GDM's Xorg holding its DRM nodes, the
    GPU's HDMI audio in its IOMMU group, the I225-V that carries the host's network, a spare
    82574L for a NIC hand-off, and root on NVMe."""
    rp = _root_port
    gpu, audio = "0000:03:00.0", "0000:03:00.1"
    devices = (
        DeviceSpec("0000:00:00.0", "8086", "4c43", 0x060000, None, 0),
        rp("0000:00:01.0", 1, "4c01", caps=Caps("root-port", (16.0, 16, 16.0, 16),
                                                acs=ACS_PORT)),
        DeviceSpec(gpu, "1002", "73bf", 0x030000, "amdgpu", 11, subsystem=("1002", "0e3a"),
                   revision=0xc3, parent="0000:00:01.0", numa_node=0, boot_vga=True,
                   framebuffer="fb0", drm=("card0", "renderD128"),
                   caps=Caps("endpoint", (16.0, 16, 16.0, 16), flr=False)),
        DeviceSpec(audio, "1002", "ab28", 0x040300, "snd_hda_intel", 11,
                   subsystem=("1002", "ab28"), parent="0000:00:01.0", numa_node=0,
                   sound=("card1", "controlC1", "pcmC1D3p", "pcmC1D7p"),
                   caps=Caps("endpoint", (16.0, 16, 16.0, 16))),
        rp("0000:00:1c.0", 12, "a338"),
        DeviceSpec("0000:04:00.0", "8086", "15f3", NET, "igc", 13, subsystem=("8086", "0000"),
                   revision=0x03, parent="0000:00:1c.0", numa_node=0, netdev="enp4s0"),
        rp("0000:00:1c.2", 14, "a33a"),
        DeviceSpec("0000:05:00.0", "8086", "10d3", NET, "e1000e", 15, subsystem=("8086", "a01f"),
                   parent="0000:00:1c.2", numa_node=0, netdev="enp5s0",
                   caps=Caps("endpoint", (2.5, 1, 2.5, 1), flr=True)),
        rp("0000:00:1d.0", 16, "a330"),
        DeviceSpec("0000:06:00.0", "144d", "a808", 0x010802, "nvme", 17,
                   subsystem=("144d", "a801"), parent="0000:00:1d.0", numa_node=0,
                   disks=("nvme0n1", "nvme0n1p1", "nvme0n1p2"), disk_via=(NVME_SUBSYSTEM,)),
    )
    drivers = ("pcieport", "amdgpu", "snd_hda_intel", "igc", "e1000e", "nvme") + STUBS
    host = HostFacts(addresses={"enp4s0": ["192.0.2.20/24"]}, routes={"enp4s0": ["default"]},
                     mounts={"nvme0n1p2": "/"},
                     cmdline=("BOOT_IMAGE=/boot/vmlinuz-6.1.0-26-amd64 root=/dev/nvme0n1p2 ro "
                              "quiet amd_iommu=on iommu=pt"), cpu_vendor="AuthenticAMD")
    display = DesktopSpec(
        boot_gpu=gpu,
        units={"display-manager.service": UnitSpec("gdm.service", holds=(
            "/dev/dri/card0", "/dev/dri/renderD128"), pid=1312, comm="Xorg")},
        modules={"amdgpu": False, "snd_hda_intel": False, "e1000e": False},
        hugepages={2048: 0, 1048576: 0}, mem_available_kb=24 << 20, cpus="0-15")
    return Profile("desktop", "A single-GPU workstation: the boot GPU (amdgpu, fbcon, GDM) "
                   "with its HDMI audio, the host's own NIC, a spare 82574L, NVMe root",
                   devices, drivers, host=host, desktop=display)


PROFILES = {"demo": demo, "desktop": desktop, "lab": lab, "mdev": mdev, "modern": modern,
            "server": server}


def get(name: str) -> Profile:
    m = _SCALE.fullmatch(name)
    if m:
        return scale(int(m[1]), int(m[2]))
    if name not in PROFILES:
        raise NotFound(f"no simulated-host profile {name!r}; choose one of "
                       f"{', '.join(PROFILES)} or scale:PFSxVFS")
    return PROFILES[name]()
