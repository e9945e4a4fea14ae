"""The device pools an export describes: the functions pcimgr manages on a host.

Managed means defined (`pcimgr define`, or an Ansible module with persistent: true), so
the pool survives a reboot, and as defined now (status ok), so a consumer is never told
about a device that is not there or not on its driver yet. A PF defined with N VFs gives
one VF pool member per VF index; a function defined onto vfio-pci gives one member.
Members of the same vendor:device on the same driver form one pool (one resource name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pcimgr.core.readiness import vfio_name

VFIO = "vfio-pci"


@dataclass(frozen=True)
class Member:
    address: str
    iommu_group: int | None
    subsystem: str | None        # "vvvv:dddd"
    pf: str | None               # a VF's PF address
    pf_netdev: str | None        # the PF's interface, for pfNames selectors
    index: int | None            # a VF's index (virtfnN)


@dataclass(frozen=True)
class Pool:
    host: str
    vendor_id: str
    device_id: str
    driver: str                  # what the members are bound to
    network: bool                # class 02: a NIC function
    kind: str                    # "vf", "pf" (an SR-IOV capable function) or "pci"
    members: tuple[Member, ...]

    @property
    def name(self) -> str:
        """A resource name the consumers accept (letters, digits, underscores)."""
        if self.kind == "vf":
            return f"sriov_{self.vendor_id}_{self.device_id}_" + (
                "vfio" if self.driver == VFIO else "netdev")
        # a variant's pool is its own: a guest gets another driver's device (migration)
        return f"pci_{self.vendor_id}_{self.device_id}_" + (
            "vfio" if self.driver == VFIO else self.driver.replace("-", "_"))

    @property
    def vfio(self) -> bool:
        """Its members go to guests through VFIO: vfio-pci or a variant driver."""
        return vfio_name(self.driver)

    @property
    def variant(self) -> str | None:
        return self.driver if self.vfio and self.driver != VFIO else None


def pools(facts: dict[str, Any]) -> tuple[list[Pool], list[str]]:
    """The host's pools, and a notice for each definition left out (and why)."""
    host = facts["host"]
    devices = {d["address"]: d for d in facts["devices"]}
    pfs = {p["address"]: p for p in facts["vfs"]}
    # (vendor, device, driver, kind) -> members, and whether they are NIC functions
    grouped: dict[tuple[str, str, str, str], list[Member]] = {}
    network: dict[tuple[str, str, str, str], bool] = {}
    notices = []
    for d in facts["definitions"]:
        address = d["address"]
        if not d["ok"]:
            notices.append(f"{host}: {address} is not as defined ({d['drift'][0]}); left out "
                           "(`pcimgr apply` first)")
            continue
        device = devices[address]
        if d["driver"] is not None:
            if not vfio_name(d["driver"]):
                notices.append(f"{host}: {address} is defined on {d['driver']}, not a VFIO "
                               "driver; left out (guests and pods get devices through VFIO)")
                continue
            key = (device["vendor_id"], device["device_id"], d["driver"],
                   "pf" if device["sriov"] else "pci")
            grouped.setdefault(key, []).append(_member(device, None, None))
            network[key] = device["class"].startswith("02")
            continue
        pf = pfs[address]
        if pf["vf_device_id"] is None:  # the kernel did not say: no pool can name them
            notices.append(f"{host}: the VF device id of {address} is unknown; left out "
                           "(its sriov_vf_device)")
            continue
        vfs = pf["vfs"][:d["vfs"]]
        drivers = {vf["driver"] for vf in vfs}
        if len(drivers) != 1 or None in drivers:
            notices.append(f"{host}: the VFs of {address} are on "
                           f"{', '.join(sorted(str(x) for x in drivers)) or 'no driver'}; "
                           "left out (one driver per pool)")
            continue
        driver = drivers.pop()
        key = (pf["vendor_id"], pf["vf_device_id"], driver, "vf")
        for vf in vfs:
            grouped.setdefault(key, []).append(
                _member(devices[vf["address"]], pf, vf["index"]))
        network[key] = devices[address]["class"].startswith("02")
    found = [Pool(host, *key[:3], network[key], key[3],
                  tuple(sorted(members, key=lambda m: m.address)))
             for key, members in sorted(grouped.items())]
    return found, notices


def _member(device: dict[str, Any], pf: dict[str, Any] | None, index: int | None) -> Member:
    sub = (f"{device['subsystem_vendor_id']}:{device['subsystem_device_id']}"
           if device["subsystem_vendor_id"] else None)
    return Member(device["address"], device["iommu_group"], sub,
                  pf["address"] if pf else None,
                  pf["netdevs"][0] if pf and pf["netdevs"] else None, index)


def ranges(indexes: list[int]) -> str:
    """0,1,2,3,5 -> "0-3,5": the device plugin's pfNames/rootDevices VF list."""
    runs: list[list[int]] = []
    for i in sorted(indexes):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
