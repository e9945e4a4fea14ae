"""Binary PCI configuration space for simulated functions.

Enough for lspci (and pcimgr's core/configspace.py) to read a function as the kernel
would expose it: the type 0/1 header, a PCI Express capability with the port type, FLR
and the link, a power management capability, for SR-IOV physical functions the SR-IOV
extended capability at 0x100 (PCIe base spec 6.0, section 9.3.3), and ACS.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CAP_PCIE = 0x10
CAP_PM = 0x01
EXT_CAP_SRIOV = 0x0010
EXT_CAP_ACS = 0x000D
SRIOV_BASE = 0x100
PM_BASE = 0x80
PORT_TYPES = {"endpoint": 0x0, "root-port": 0x4, "upstream-port": 0x5, "downstream-port": 0x6,
              "pcie-to-pci-bridge": 0x7, "integrated-endpoint": 0x9}
SPEED_CODES = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5}


@dataclass(frozen=True)
class Caps:
    """The capabilities a simulated function shows (profiles.DeviceSpec decides them)."""

    port_type: str | None = "endpoint"  # None: conventional PCI, no PCIe capability
    # (max GT/s, max lanes, current GT/s, current lanes)
    link: tuple[float, int, float, int] | None = None
    flr: bool = False
    pm_soft_reset: bool | None = None   # None: no PM capability; False: No_Soft_Reset set
    acs: int | None = None              # capability bits, all enabled; None: no ACS


def build(vendor: int, device: int, class_code: int, revision: int,
          subsystem_vendor: int, subsystem_device: int, bridge: bool,
          secondary_bus: int = 0, subordinate_bus: int = 0,
          sriov: tuple[int, int, int, int, int] | None = None,
          caps: Caps = Caps()) -> bytes:
    """sriov = (initial_vfs, total_vfs, offset, stride, vf_device)."""
    cfg = bytearray(4096)
    struct.pack_into("<HHHH", cfg, 0, vendor, device, 0x0406, 0x0010)  # status: cap list
    cfg[0x08] = revision
    cfg[0x09:0x0C] = class_code.to_bytes(3, "little")
    cfg[0x0E] = 0x01 if bridge else 0x00
    if bridge:
        cfg[0x18], cfg[0x19], cfg[0x1A] = 0, secondary_bus, subordinate_bus
    else:
        struct.pack_into("<HH", cfg, 0x2C, subsystem_vendor, subsystem_device)
    standard = []
    if caps.port_type is not None:
        standard.append(0x40)
    if caps.pm_soft_reset is not None:
        standard.append(PM_BASE)
    cfg[0x34] = standard[0] if standard else 0
    if not standard:
        struct.pack_into("<H", cfg, 0x06, 0x0000)  # no capabilities list
    if caps.port_type is not None:
        nxt = PM_BASE if caps.pm_soft_reset is not None else 0
        flags = 0x0002 | PORT_TYPES[caps.port_type] << 4  # capability version 2
        struct.pack_into("<BBHI", cfg, 0x40, CAP_PCIE, nxt, flags, (1 << 28) if caps.flr else 0)
        if caps.link is not None:
            max_speed, max_width, speed, width = caps.link
            struct.pack_into("<I", cfg, 0x4C, SPEED_CODES[max_speed] | max_width << 4)
            struct.pack_into("<H", cfg, 0x52, SPEED_CODES[speed] | width << 4)
    if caps.pm_soft_reset is not None:
        # PM capability version 3; PMCSR bit 3 No_Soft_Reset
        struct.pack_into("<BBHH", cfg, PM_BASE, CAP_PM, 0, 0x0003,
                         0 if caps.pm_soft_reset else 0x0008)
    extended = []
    if sriov is not None:
        extended.append(SRIOV_BASE)
    if caps.acs is not None:
        extended.append(SRIOV_BASE + 0x40 if sriov is not None else SRIOV_BASE)
    if sriov is not None:
        initial, total, offset, stride, vf_device = sriov
        nxt = extended[1] if len(extended) > 1 else 0
        struct.pack_into("<HH", cfg, SRIOV_BASE, EXT_CAP_SRIOV, 0x0001 | nxt << 4)
        struct.pack_into("<HHHHHBxHHxxH", cfg, SRIOV_BASE + 0x08, 0, 0, initial, total, 0,
                         0, offset, stride, vf_device)
        struct.pack_into("<II", cfg, SRIOV_BASE + 0x1C, 0x553, 0x1)  # page sizes
    if caps.acs is not None:
        # Linux turns on SV, RR, CR and UF where the port has them (pci_std_enable_acs)
        struct.pack_into("<HHHH", cfg, extended[-1], EXT_CAP_ACS, 0x0001, caps.acs,
                         caps.acs & 0x1D)
    return bytes(cfg)


def set_num_vfs(cfg: bytes, numvfs: int) -> bytes:
    """NumVFs and VF Enable/VF MSE in the SR-IOV control register, as enabling does."""
    out = bytearray(cfg)
    struct.pack_into("<H", out, SRIOV_BASE + 0x08, 0x9 if numvfs else 0)
    struct.pack_into("<H", out, SRIOV_BASE + 0x10, numvfs)
    return bytes(out)
