"""Binary PCI configuration space for simulated functions.

Enough for lspci to read a function as the kernel would expose it: the
type 0/1 header, a PCI Express capability, and for SR-IOV physical functions
the SR-IOV extended capability at 0x100 (PCIe base spec 6.0, section 9.3.3).
"""

from __future__ import annotations

import struct

CAP_PCIE = 0x10
EXT_CAP_SRIOV = 0x0010
SRIOV_BASE = 0x100


def build(vendor: int, device: int, class_code: int, revision: int,
          subsystem_vendor: int, subsystem_device: int, bridge: bool,
          secondary_bus: int = 0, subordinate_bus: int = 0,
          sriov: tuple[int, int, int, int, int] | None = None) -> bytes:
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
    cfg[0x34] = 0x40
    # PCIe capability v2: endpoint (0) or root port (4)
    port_type = 0x4 if bridge else 0x0
    struct.pack_into("<BBH", cfg, 0x40, CAP_PCIE, 0x00, 0x0002 | port_type << 4)
    if sriov is not None:
        initial, total, offset, stride, vf_device = sriov
        struct.pack_into("<HH", cfg, SRIOV_BASE, EXT_CAP_SRIOV, 0x0001)  # id, version 1, next 0
        struct.pack_into("<HHHHHBxHHxxH", cfg, SRIOV_BASE + 0x08, 0, 0, initial, total, 0,
                         0, offset, stride, vf_device)
        struct.pack_into("<II", cfg, SRIOV_BASE + 0x1C, 0x553, 0x1)  # page sizes
    return bytes(cfg)


def set_num_vfs(cfg: bytes, numvfs: int) -> bytes:
    """NumVFs and VF Enable/VF MSE in the SR-IOV control register, as enabling does."""
    out = bytearray(cfg)
    struct.pack_into("<H", out, SRIOV_BASE + 0x08, 0x9 if numvfs else 0)
    struct.pack_into("<H", out, SRIOV_BASE + 0x10, numvfs)
    return bytes(out)
