"""Defined state: what the administrator wants each function to be, kept across reboots.

One readable JSON file per function in CONFIG_DIR/devices/<address>.json
(default /etc/pcimgr), written atomically, with what identifies the hardware
(address, vendor:device, subsystem ids, IOMMU group) next to the intent (a
driver; or a VF count, the VFs' driver and per-VF MAC/VLAN/trust settings).

For udev, each definition also has CONFIG_DIR/udev/<address>_<VENDOR>:<DEVICE>.env
(KEY=value lines): the rules (udev_files.py) look it up by the kernel name and the
uevent's PCI_ID, so a different card in the same slot matches no file.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from pcimgr import statefile
from pcimgr.model import PciDevice
from pcimgr.sysfs import Sysfs

DEFAULT_CONFIG_DIR = "/etc/pcimgr"
FORMAT = 1


def config_dir(sysfs: Sysfs, explicit: str | None) -> str:
    """--config-dir, else inside a simulated host, else /etc/pcimgr."""
    if explicit:
        return os.path.abspath(explicit)
    return os.path.join(sysfs.root, ".pcimgr-config") if sysfs.simulated else DEFAULT_CONFIG_DIR


@dataclass(frozen=True)
class Definition:
    address: str
    vendor_id: str
    device_id: str
    subsystem_vendor_id: str | None
    subsystem_device_id: str | None
    iommu_group: int | None
    driver: str | None = None           # bind this driver
    vfs: int | None = None              # a PF: this many VFs
    vf_driver: str | None = None        # ... on vfio-pci, or "host"
    vf: dict[str, dict[str, Any]] = field(default_factory=dict)  # index -> VF settings

    @property
    def ids(self) -> str:
        return f"{self.vendor_id}:{self.device_id}"

    def describe(self) -> str:
        parts = []
        if self.driver:
            parts.append(f"driver {self.driver}")
        if self.vfs is not None:
            parts.append(f"{self.vfs} VF(s) on {self.vf_driver}")
        for index, settings in sorted(self.vf.items(), key=lambda kv: int(kv[0])):
            parts.append(f"VF {index}: " + ", ".join(f"{k} {v}" for k, v in settings.items()))
        return "; ".join(parts) or "nothing"


def identify(device: PciDevice, **intent: Any) -> Definition:
    return Definition(str(device.address), device.vendor_id, device.device_id,
                      device.subsystem_vendor_id, device.subsystem_device_id,
                      device.iommu_group, **intent)


def path(cfg: str, address: str) -> str:
    return os.path.join(cfg, "devices", f"{address}.json")


def load(cfg: str, address: str) -> Definition | None:
    data = statefile.read(path(cfg, address))
    return None if data is None else _from_json(data)


def load_all(cfg: str) -> list[Definition]:
    directory = os.path.join(cfg, "devices")
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    return [d for d in (load(cfg, n[:-5]) for n in names) if d is not None]


def save(cfg: str, definition: Definition) -> None:
    statefile.write(path(cfg, definition.address), {"format": FORMAT} | asdict(definition),
                    mode=0o644)
    _remove_env(cfg, definition.address)
    env = []
    if definition.driver:
        env.append(f"PCIMGR_DRIVER={definition.driver}")
    if definition.vfs is not None:
        env.append(f"PCIMGR_VFS={definition.vfs}")
    statefile.write(os.path.join(cfg, "udev", env_name(definition)), "\n".join(env), mode=0o644)


def remove(cfg: str, address: str) -> None:
    statefile.remove(path(cfg, address))
    _remove_env(cfg, address)


def env_name(definition: Definition) -> str:
    """As the rules build it: %k and the uevent's PCI_ID (upper-case hex)."""
    return f"{definition.address}_{definition.vendor_id.upper()}:{definition.device_id.upper()}.env"


def _remove_env(cfg: str, address: str) -> None:
    directory = os.path.join(cfg, "udev")
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith(f"{address}_"):
                statefile.remove(os.path.join(directory, name))


def _from_json(data: dict[str, Any]) -> Definition:
    fields = {k: v for k, v in data.items() if k in Definition.__dataclass_fields__}
    return Definition(**fields)
