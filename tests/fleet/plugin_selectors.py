"""An evaluator of the SR-IOV network device plugin's selectors, written from its README
("Device selectors", "pfNames and rootDevices ranges"), apart from pcimgr's generator: which
host functions each resource pool of a config.json takes."""

from __future__ import annotations

from typing import Any


def vf_indexes(spec: str) -> set[int]:
    """"0,2-7,9" -> {0, 2, ..., 7, 9}."""
    found: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


def _by_pf(entries: list[str], pf_key: str, dev: dict[str, Any]) -> bool:
    for entry in entries:
        name, hash_, ranges = entry.partition("#")
        if dev.get(pf_key) != name:
            continue
        if not hash_ or dev["vf_index"] in vf_indexes(ranges):
            return True
    return False


def matches(selector: dict[str, Any], dev: dict[str, Any]) -> bool:
    checks = {
        "vendors": lambda v: dev["vendor_id"] in v,
        "devices": lambda v: dev["device_id"] in v,
        "drivers": lambda v: dev["driver"] in v,
        "pciAddresses": lambda v: dev["address"] in v,
        "pfNames": lambda v: _by_pf(v, "pf_name", dev),
        "rootDevices": lambda v: _by_pf(v, "pf_address", dev),
    }
    unknown = set(selector) - set(checks)
    assert not unknown, f"selectors this evaluator does not know: {unknown}"
    return all(checks[key](value) for key, value in selector.items())


def pools(config: dict[str, Any], devices: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Resource name -> addresses. netDevice pools see the network functions (class 02),
    accelerator pools every function; a device goes to the first pool that takes it."""
    taken: set[str] = set()
    found: dict[str, set[str]] = {}
    for resource in config["resourceList"]:
        kind = resource.get("deviceType", "netDevice")
        selectors = resource.get("selectors", {})
        selectors = selectors if isinstance(selectors, list) else [selectors]
        pool = found.setdefault(f"{resource.get('resourcePrefix', 'intel.com')}/"
                                f"{resource['resourceName']}", set())
        for dev in devices:
            if dev["address"] in taken or (kind == "netDevice"
                                           and not dev["class"].startswith("02")):
                continue
            if any(matches(s, dev) for s in selectors):
                pool.add(dev["address"])
                taken.add(dev["address"])
    return found


def host_devices(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """What the plugin discovers on a host, from its pcimgr facts: ids, driver, and for a VF
    its PF's interface, address and its own index."""
    vf_of: dict[str, tuple[str, str | None, int]] = {}
    for pf in facts["vfs"]:
        for vf in pf["vfs"]:
            vf_of[vf["address"]] = (pf["address"], (pf["netdevs"] or [None])[0], vf["index"])
    found = []
    for d in facts["devices"]:
        pf_address, pf_name, index = vf_of.get(d["address"], (None, None, None))
        found.append(d | {"pf_address": pf_address, "pf_name": pf_name, "vf_index": index})
    return found
