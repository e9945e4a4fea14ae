"""NVIDIA's vendor vGPU interface on a VF, as sysfs shows it (core/mdev.py has the shape):
bus/pci/devices/VF/nvidia/{creatable_vgpu_types,current_vgpu_type}."""

from __future__ import annotations

from pcimgr.core.mdev import VendorVgpu, parse_creatable
from pcimgr.host.sysfs import Sysfs, device_path

DIR = "nvidia"


def current_path(vf: str) -> str:
    return device_path(vf, DIR, "current_vgpu_type")


def read(sysfs: Sysfs, vf: str) -> VendorVgpu | None:
    """The VF's vGPU state; None when it has no vendor vGPU interface."""
    current = sysfs.read_attr(current_path(vf))
    if current is None:
        return None
    creatable = sysfs.read_attr(device_path(vf, DIR, "creatable_vgpu_types")) or ""
    value = current.strip()
    return VendorVgpu(vf, int(value) if value.isascii() and value.isdigit() else 0,
                      parse_creatable(creatable))
