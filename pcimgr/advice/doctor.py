"""`pcimgr doctor`: can this host pass devices through, and what to fix if not.

Each check is pass, warn or fail with the fix in one line. Passthrough can
work when nothing fails; warnings limit what is possible (shared groups) or
concern the other network modes (vhost-net).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from pcimgr.core.errors import PcimgrError
from pcimgr.core.model import Host, IommuGroup
from pcimgr.core.topology import Topology
from pcimgr.host.machine import Machine

PASS, WARN, FAIL = "pass", "warn", "fail"
NA = "n/a"  # the check could not run here, and says why: never a pass it did not earn
GRUB_FIX = ("`pcimgr doctor --fix` adds intel_iommu=on (Intel) or amd_iommu=on (AMD) to the "
            "kernel command line through the host's bootloader (/etc/default/grub and "
            "update-grub on Debian), then reboot")


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def passthrough_possible(checks: list[Check]) -> bool:
    return all(c.status != FAIL for c in checks)


def run(machine: Machine, host: Host, libvirt_uri: str | None) -> list[Check]:
    """libvirt_uri None: do not ask libvirt (the machine does not by default, and no
    --connect said otherwise)."""
    from pcimgr.host import topology
    topo = topology.read(machine.sysfs, host)
    libvirt, version = _libvirt(machine, libvirt_uri)
    checks = [_iommu(machine, host), _interrupt_remapping(machine, host), _vfio(machine),
              _backend(machine, version, host.iommu_enabled), _vhost_net(machine), _sriov(host),
              _shared_groups(host, topo), _links(topo), libvirt, _root(machine)]
    mdev = _mdev_autostart(machine)
    if mdev is not None:
        checks.insert(-2, mdev)
    return checks


def _mdev_autostart(machine: Machine) -> Check | None:
    """Only on a host with mdev parents or mdevctl's rule: elsewhere there is nothing to
    judge and nothing worth a line."""
    from pcimgr.advice import mdevctl_rule
    from pcimgr.host import mdevs
    parents = mdevs.parent_names(machine.sysfs)
    try:
        rule = mdevctl_rule.effective(machine)
        finding = mdevctl_rule.broken(machine) if rule else None
    except PcimgrError as e:  # a rule file that is not text
        return Check("mdev-autostart", WARN, str(e))
    if rule is None:
        if not parents:
            return None
        return Check("mdev-autostart", NA, f"{len(parents)} mdev parent(s), no mdevctl rule: "
                     "--auto mdevs start through pcimgr's own rule, once installed",
                     "`pcimgr install-udev`")
    if finding is None:
        return Check("mdev-autostart", PASS, f"mdevctl's rule ({rule[0].rsplit('/', 1)[0]}) "
                     "runs an mdevctl that is there")
    return Check("mdev-autostart", WARN,
                 f"mdevctl's rule /{finding.rel} runs {finding.wrong}, which is not there"
                 + (f" (mdevctl is {finding.program})" if finding.program else "")
                 + ": --auto mdevs are not started when their parent appears",
                 "`pcimgr doctor --fix` writes the rule with the right path to "
                 f"/{mdevctl_rule.OVERRIDE}; or `pcimgr install-udev`, whose own rule "
                 "starts them")


def _backend(machine: Machine, libvirt_version: str | None, iommu: bool = True) -> Check:
    """Which IOMMU backends the kernel offers a guest's devices: the group interface
    (/dev/vfio/vfio + /dev/vfio/N: QEMU's default, DPDK, mdevs) and IOMMUFD's device cdev
    (/dev/iommu + /dev/vfio/devices/vfioN, Linux >= 6.6 with VFIO_DEVICE_CDEV), and what
    libvirt accepts (<driver iommufd='yes'/> per hostdev from 12.1)."""
    if not iommu:
        return Check("iommu-backend", NA, "the IOMMU is off: no backend can give a device "
                     "to a guest (see the iommu check)")
    dev = machine.sysfs.dev_root
    group = os.path.exists(os.path.join(dev, "vfio/vfio"))
    iommufd = os.path.exists(os.path.join(dev, "iommu"))
    cdev = os.path.isdir(os.path.join(dev, "vfio/devices")) or _config(machine,
                                                                      "VFIO_DEVICE_CDEV")
    offered = (["group (/dev/vfio/vfio + /dev/vfio/N)"] if group else []) + (
        ["IOMMUFD device cdev (/dev/iommu + /dev/vfio/devices/vfioN)"] if iommufd and cdev
        else [])
    if not offered:
        return Check("iommu-backend", WARN, "no VFIO backend yet (vfio-pci not loaded, no "
                     "/dev/iommu)", "pcimgr loads vfio-pci at the first detach")
    detail = "the kernel offers: " + "; ".join(offered)
    if iommufd and not cdev:
        detail += "; /dev/iommu without VFIO's device cdev (CONFIG_VFIO_DEVICE_CDEV)"
    if iommufd and cdev and libvirt_version is not None:
        n = tuple(int(p) for p in libvirt_version.split("."))
        detail += (f"; libvirt {libvirt_version} " + (
            "can give a hostdev through IOMMUFD (<driver iommufd='yes'/>)" if n >= (12, 1, 0)
            else "uses the group interface only (IOMMUFD per hostdev from 12.1)"))
    return Check("iommu-backend", PASS, detail + "; DPDK and mdevs need the group interface")


def _config(machine: Machine, option: str) -> bool:
    """CONFIG_OPTION=y in the running kernel's /boot/config-RELEASE (Debian ships it)."""
    from pcimgr.host import modaliases
    release = modaliases.release(machine)
    text = machine.read_system_file(f"boot/config-{release}") if release else None
    return text is not None and f"\nCONFIG_{option}=y\n".encode() in b"\n" + text


def _iommu(machine: Machine, host: Host) -> Check:
    cmdline = machine.kernel_cmdline().split()
    asked = [w for w in cmdline if w.startswith(("intel_iommu=", "amd_iommu="))]
    units = machine.sysfs.list_dir("class/iommu")
    if host.iommu_enabled:
        return Check("iommu", PASS, f"{len(host.groups)} IOMMU groups, IOMMU units "
                     f"{', '.join(units) or 'none listed'}"
                     + (f", kernel command line: {' '.join(asked)}" if asked else ""))
    if any(w in ("intel_iommu=on", "amd_iommu=on") for w in asked):
        return Check("iommu", FAIL, f"no IOMMU groups although the kernel was booted with "
                     f"{' '.join(asked)}", "enable VT-d (Intel) or AMD-Vi/IOMMU in the "
                     "firmware setup, then reboot")
    return Check("iommu", FAIL, "no IOMMU groups: the IOMMU is off", GRUB_FIX
                 + "; VT-d/AMD-Vi must also be enabled in the firmware")


def _interrupt_remapping(machine: Machine, host: Host) -> Check:
    if not host.iommu_enabled:
        return Check("interrupt-remapping", FAIL, "no IOMMU, so no interrupt remapping",
                     "enable the IOMMU first (see the iommu check)")
    if machine.interrupt_remapping():
        return Check("interrupt-remapping", PASS, "MSIs are remapped (IR-* interrupt chips)")
    return Check("interrupt-remapping", FAIL, "the IOMMU does not remap interrupts, and "
                 "vfio refuses such devices by default",
                 "enable interrupt remapping/x2APIC in the firmware; only if that is "
                 "impossible: options vfio_iommu_type1 allow_unsafe_interrupts=1")


def _vfio(machine: Machine) -> Check:
    from pcimgr.advice.bootloader import blacklisted
    word = next((w for w in machine.kernel_cmdline().split() if blacklisted(w)), None)
    if word is not None:
        return Check("vfio", FAIL, f"the kernel was booted with {word}: {blacklisted(word)} "
                     "cannot load, so no function can go to vfio-pci",
                     "remove it from the kernel command line (the bootloader's "
                     "configuration) and reboot")
    loaded = machine.sysfs.exists("bus/pci/drivers/vfio-pci")
    node = machine.sysfs.dev_node_exists("vfio/vfio")
    if loaded and node:
        return Check("vfio", PASS, "vfio-pci is loaded and /dev/vfio/vfio exists")
    if loaded:
        return Check("vfio", FAIL, "vfio-pci is loaded but /dev/vfio/vfio is missing",
                     "check that udev runs and that the vfio module is loaded (modprobe vfio)")
    if machine.module_available("vfio-pci"):
        return Check("vfio", PASS, "vfio-pci is available (not loaded; pcimgr loads it when "
                     "needed, and /dev/vfio/vfio appears then)")
    return Check("vfio", FAIL, "no vfio-pci module for the running kernel",
                 "install the distribution kernel's modules (linux-image-amd64), or build "
                 "the kernel with CONFIG_VFIO_PCI")


def _vhost_net(machine: Machine) -> Check:
    if machine.sysfs.dev_node_exists("vhost-net"):
        return Check("vhost-net", PASS, "/dev/vhost-net exists: virtio NICs can use vhost_net")
    return Check("vhost-net", WARN, "/dev/vhost-net is missing: virtio NICs fall back to "
                 "QEMU's userspace data path",
                 "modprobe vhost_net, and add vhost_net to /etc/modules")


def _sriov(host: Host) -> Check:
    pfs = [d for d in host.devices if d.sriov is not None and d.base_class == 0x02]
    if not pfs:
        return Check("sr-iov", WARN, "no SR-IOV capable NIC: VFs are not an option here",
                     "an SR-IOV NIC (82576, X710, ConnectX, ...) in a slot with its own group")
    return Check("sr-iov", PASS, "; ".join(
        f"{d.address} ({d.driver or 'no driver'}): {d.sriov.numvfs}/{d.sriov.totalvfs} VFs"
        for d in pfs if d.sriov is not None))


def _shared_groups(host: Host, topo: Topology) -> Check:
    if not host.groups:
        return Check("groups", NA, "no IOMMU groups to judge (the IOMMU is off, or the tree "
                     "has no kernel/iommu_groups)")
    shared = [g for g in host.groups.values()
              if sum(1 for m in g.members if not m.is_bridge) > 1]
    if not shared:
        return Check("groups", PASS, "every endpoint has an IOMMU group of its own")

    def why(g: IommuGroup) -> str:
        # in a few words; `pcimgr groups --why` says it whole, with the way out
        return "; ".join(topo.why_shared([m.address for m in g.members], short=True))
    return Check("groups", WARN, "groups shared by several endpoints (go to a guest together, "
                 "`--group`): " + "; ".join(
                     f"{g.number}: " + ", ".join(str(m.address) for m in g.members
                                                  if not m.is_bridge) + f" ({why(g)})"
                     for g in shared),
                 "a card in a slot behind an ACS-capable root port gets a group of its own "
                 "(`pcimgr groups --why`)")


def _links(topo: Topology) -> Check:
    if not any(node.link is not None for node in topo.nodes.values()):
        return Check("links", NA, "no function shows its PCIe link (no current_link_* files, "
                     "no readable PCI Express capability): nothing to judge")
    slow = [f"{a}: {topo.degraded(a)}" for a in sorted(topo.nodes) if topo.degraded(a)]
    unjudged = sorted(str(a) for a, n in topo.nodes.items() if n.link is not None
                      and n.parent is not None and n.parent not in topo.nodes)
    if not slow:
        return Check("links", PASS, "every PCIe link trained at what both ends support"
                     + (f" (not judged: {', '.join(unjudged)}, whose upstream port the bus "
                        "does not list)" if unjudged else ""))
    return Check("links", WARN, "; ".join(slow), "reseat the card or move it to a slot wired "
                 "for its width and speed (`pcimgr tree` shows each link)")


def _libvirt(machine: Machine, uri: str | None) -> tuple[Check, str | None]:
    if uri is None:
        recorded = machine.recorded_domains()
        if recorded is not None:
            return Check("libvirt", PASS, f"{len(recorded)} guest(s) as libvirt had them "
                         f"in {machine.kind}"), None
        return Check("libvirt", WARN, f"not asked: {machine.kind} uses libvirt only with "
                     "--connect URI"), None
    from pcimgr.host import libvirt_adapter
    try:
        version = libvirt_adapter.connect(uri).version()
    except PcimgrError as e:
        return Check("libvirt", WARN, str(e), "install libvirt-daemon-system and start "
                     "libvirtd (or virtqemud)"), None
    return Check("libvirt", PASS, f"libvirt {version} answers at {uri}"), version


def _root(machine: Machine) -> Check:
    if not machine.needs_root:
        return Check("root", PASS, f"not needed on {machine.kind}")
    if os.geteuid() == 0:
        return Check("root", PASS, "running as root")
    return Check("root", WARN, "not root: changes (detach, assign, vfs) will be refused",
                 "run pcimgr with sudo for changes")
