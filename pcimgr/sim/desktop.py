"""A desktop host's display, services and memory, simulated for hand-offs: the virtual
consoles, sysfb's boot framebuffer (its platform device, driver and /proc/iomem claim), the
DRM, fbdev and ALSA nodes a GPU's drivers make, the display manager and other holders of
those nodes, loadable modules, hugepage pools and the CPUs online.

As the lab's kernel showed (tests/lab/fixtures/display.json): fbcon is a virtual console of
its own (vtconN, "(M) frame buffer device", bind 1); sysfb's BOOTFB claim stays in
/proc/iomem while its platform device exists, whichever driver it has; a unit's processes
hold the nodes while it is active. State that sysfs does not show (units, holders, the
modules unloaded, properties) is kept beside the tree in STATE.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from pcimgr.core.errors import KernelError
from pcimgr.sim import undo

STATE = ".pcimgr-desktop.json"
_MAX = 1 << 20


@dataclass(frozen=True)
class UnitSpec:
    id: str                         # its own name; the spec's key may be an alias
    active: bool = True
    holds: tuple[str, ...] = ()     # /dev nodes its main process has open while active
    pid: int = 1200
    comm: str = "Xorg"
    refuses_stop: bool = False      # `systemctl stop` fails (a unit that will not go)


@dataclass(frozen=True)
class DesktopSpec:
    vtcons: tuple[tuple[str, bool], ...] = (("(S) dummy device", True),
                                            ("(M) frame buffer device", True))
    # sysfb's platform device on the boot GPU's BAR: (device, driver or None)
    boot_fb: tuple[str, str | None] | None = None
    boot_gpu: str | None = None     # the function whose BAR it sits on
    units: dict[str, UnitSpec] = field(default_factory=dict)
    holders: dict[str, tuple[tuple[int, str, str | None], ...]] = field(default_factory=dict)
    modules: dict[str, bool] = field(default_factory=dict)  # driver -> built in
    module_holders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hugepages: dict[int, int] = field(default_factory=lambda: {2048: 0, 1048576: 0})
    mem_available_kb: int = 16 << 20
    cpus: str = "0-15"
    systemd: bool = True
    boot_id: str = "8d1e6c9e-5b1a-4c4e-9a51-2f7c1f0d3a11"


def lay_out(root: str, spec: DesktopSpec, bars: dict[str, str]) -> None:
    """The tree's desktop parts; bars: function -> its BAR range in /proc/iomem."""
    for n, (name, bound) in enumerate(spec.vtcons):
        d = os.path.join(root, "class/vtconsole", f"vtcon{n}")
        os.makedirs(d)
        _put(os.path.join(d, "name"), name)
        _put(os.path.join(d, "bind"), "1" if bound else "0")
    if any("frame buffer" in name for name, _ in spec.vtcons):
        os.makedirs(os.path.join(root, "class/graphics/fbcon"), exist_ok=True)
    os.makedirs(os.path.join(root, "bus/platform/devices"), exist_ok=True)
    if spec.boot_fb is not None:
        device, driver = spec.boot_fb
        os.makedirs(os.path.join(root, "devices/platform", device))
        os.symlink(f"../../../devices/platform/{device}",
                   os.path.join(root, "bus/platform/devices", device))
        for drv in {"efifb", "vesafb", "simplefb", "simpledrm"} | ({driver} if driver else set()):
            ddir = os.path.join(root, "bus/platform/drivers", drv)
            os.makedirs(ddir, exist_ok=True)
            for attr in ("bind", "unbind"):
                _put(os.path.join(ddir, attr), "")
        if driver:
            _platform_link(root, device, driver)
    _put(os.path.join(root, "proc/iomem"), _iomem(spec, bars))
    _put(os.path.join(root, "proc/sys/kernel/random/boot_id"), spec.boot_id)
    for size, count in spec.hugepages.items():
        d = os.path.join(root, "kernel/mm/hugepages", f"hugepages-{size}kB")
        os.makedirs(d)
        _put(os.path.join(d, "nr_hugepages"), str(count))
        _put(os.path.join(d, "free_hugepages"), str(count))
    _meminfo(root, spec.mem_available_kb)
    _put(os.path.join(root, "devices/system/cpu/online"), spec.cpus)
    for driver, builtin in spec.modules.items():
        _module(root, driver, builtin, spec.module_holders.get(driver, ()))
    if spec.systemd:
        os.makedirs(os.path.join(root, "run/systemd/system"), exist_ok=True)
    state = {"units": {alias: {"id": u.id, "active": u.active, "holds": list(u.holds),
                               "pid": u.pid, "comm": u.comm, "refuses_stop": u.refuses_stop}
                       for alias, u in spec.units.items()},
             "holders": {node: [list(h) for h in hs] for node, hs in spec.holders.items()},
             "properties": {}, "unloaded": {}, "systemd": spec.systemd,
             "fbcon": next((f"vtcon{n}" for n, (name, _) in enumerate(spec.vtcons)
                            if "frame buffer" in name), None)}
    _put(os.path.join(root, STATE), json.dumps(state, indent=1))


def _put(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + ("\n" if text and not text.endswith("\n") else ""))


def _platform_link(root: str, device: str, driver: str) -> None:
    undo.symlink(f"../../../bus/platform/drivers/{driver}",
                 os.path.join(root, "devices/platform", device, "driver"))
    undo.symlink(f"../../../../devices/platform/{device}",
                 os.path.join(root, "bus/platform/drivers", driver, device))


def _iomem(spec: DesktopSpec, bars: dict[str, str]) -> str:
    lines = ["00000000-00000fff : Reserved", "00001000-0009ffff : System RAM"]
    for address, bar in sorted(bars.items()):
        lines.append(f"  {bar} : {address}")
        if spec.boot_fb is not None and address == spec.boot_gpu:
            lo = bar.split("-")[0]
            lines.append(f"    {lo}-{int(lo, 16) + 0x7fffff:08x} : BOOTFB")
            driver = spec.boot_fb[1]
            if driver in ("efifb", "vesafb", "simplefb"):
                lines.append(f"      {lo}-{int(lo, 16) + 0x7fffff:08x} : {driver}")
    return "\n".join(lines)


def _meminfo(root: str, available_kb: int) -> None:
    _put(os.path.join(root, "proc/meminfo"),
         f"MemTotal:       {32 << 20} kB\nMemFree:        {available_kb} kB\n"
         f"MemAvailable:   {available_kb} kB\n")


def _module(root: str, driver: str, builtin: bool, holders: tuple[str, ...]) -> None:
    name = driver.replace("-", "_")
    d = os.path.join(root, "module", name)
    undo.makedirs(d, exist_ok=True)
    if not builtin:
        undo.write_text(os.path.join(d, "initstate"), "live\n")
        undo.write_text(os.path.join(d, "refcnt"), f"{len(holders)}\n")
        undo.makedirs(os.path.join(d, "holders"), exist_ok=True)
        for h in holders:
            undo.makedirs(os.path.join(d, "holders", h), exist_ok=True)
    link = os.path.join(root, "bus/pci/drivers", driver, "module")
    if os.path.isdir(os.path.dirname(link)) and not os.path.lexists(link):
        undo.symlink(f"../../../../module/{name}", link)


# -- state kept beside the tree ------------------------------------------------------------

def load(root: str) -> dict[str, Any] | None:
    """None for a tree without a desktop (its units and holders: none)."""
    path = os.path.join(root, STATE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as f:
        text = f.read(_MAX + 1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if len(text) > _MAX or not isinstance(data, dict) or not all(
            isinstance(data.get(k), dict) for k in ("units", "holders", "properties",
                                                    "unloaded")):
        raise KernelError(f"the simulated desktop state {path} is damaged; rebuild the host "
                          "with `pcimgr sim create`")
    return data


def save(root: str, data: dict[str, Any]) -> None:
    with undo.atomic(root):
        undo.write_text(os.path.join(root, STATE), json.dumps(data, indent=1))


# -- the kernel's reactions ----------------------------------------------------------------

def handles(root: str, parent: str, attr: str) -> bool:
    rel = os.path.relpath(parent, root)
    return (rel.startswith(("bus/platform/drivers/", "class/vtconsole/"))
            and attr in ("bind", "unbind")) or (
        rel.startswith("kernel/mm/hugepages/") and attr == "nr_hugepages")


def write(root: str, parent: str, attr: str, value: str, commit: Any) -> None:
    rel = os.path.relpath(parent, root)
    name = value.strip()
    if rel.startswith("class/vtconsole/"):  # con_bind_store(): 0 or 1, read back as written
        if attr != "bind" or name not in ("0", "1"):
            raise OSError(22, os.strerror(22))
        _bind_console(root, os.path.basename(parent), name == "1")
        return
    if rel.startswith("bus/platform/drivers/"):
        driver = os.path.basename(parent)
        link = os.path.join(root, "devices/platform", name, "driver")
        if not os.path.isdir(os.path.join(root, "devices/platform", name)) or "/" in name:
            raise OSError(19, os.strerror(19))  # ENODEV
        bound = os.path.basename(os.readlink(link)) if os.path.islink(link) else None
        if attr == "unbind":
            if bound != driver:
                raise OSError(19, os.strerror(19))
            undo.discard(link)
            undo.discard(os.path.join(parent, name))
        else:
            if bound is not None:
                raise OSError(16, os.strerror(16))  # EBUSY
            _platform_link(root, name, driver)
        return
    _hugepages(root, parent, value, commit)


def _hugepages(root: str, pool: str, value: str, commit: Any) -> None:
    if not value.strip().isdigit():
        raise OSError(22, os.strerror(22))
    size = int(os.path.basename(pool).removeprefix("hugepages-").removesuffix("kB"))
    total = int(_read(os.path.join(pool, "nr_hugepages")))
    free = int(_read(os.path.join(pool, "free_hugepages")))
    available = _available(root)
    want = int(value)
    # more: the kernel gives what it can find, and says nothing; fewer: pages in use stay
    want = min(want, total + available // size) if want > total else max(want, total - free)
    undo.write_text(os.path.join(pool, "nr_hugepages"), f"{want}\n")
    undo.write_text(os.path.join(pool, "free_hugepages"), f"{free + want - total}\n")
    _put_meminfo(root, available - (want - total) * size)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _available(root: str) -> int:
    for line in _read(os.path.join(root, "proc/meminfo")).splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def _put_meminfo(root: str, available_kb: int) -> None:
    undo.write_text(os.path.join(root, "proc/meminfo"),
                    f"MemTotal:       {32 << 20} kB\nMemFree:        {available_kb} kB\n"
                    f"MemAvailable:   {available_kb} kB\n")


def _bind_console(root: str, vtcon: str, bound: bool) -> None:
    """One console driver holds the consoles at a time (the lab: fbcon unbound, the dummy
    console takes them; fbcon bound, the dummy lets go)."""
    consoles = os.path.join(root, "class/vtconsole")
    for name in sorted(os.listdir(consoles)):
        value = bound if name == vtcon else not bound
        undo.write_text(os.path.join(consoles, name, "bind"), f"{int(value)}\n")


def refresh_fbcon(root: str) -> None:
    """After a driver came or went: fbcon unregisters its console with the last framebuffer
    and registers it again, bound, with the next (Linux 6.1 in the lab's desktop boot)."""
    data = load(root)
    vtcon = data.get("fbcon") if data else None
    if not isinstance(vtcon, str):
        return
    graphics = os.path.join(root, "class/graphics")
    fbs = [n for n in (os.listdir(graphics) if os.path.isdir(graphics) else [])
           if n[2:].isdigit() and os.path.exists(os.path.join(graphics, n))]
    d = os.path.join(root, "class/vtconsole", vtcon)
    if fbs and not os.path.isdir(d):
        undo.makedirs(d)
        undo.write_text(os.path.join(d, "name"), "(M) frame buffer device\n")
        _bind_console(root, vtcon, True)
    elif not fbs and os.path.isdir(d):
        undo.discard(d)
        for name in os.listdir(os.path.join(root, "class/vtconsole")):
            undo.write_text(os.path.join(root, "class/vtconsole", name, "bind"), "1\n")


def module_dir(root: str, name: str) -> str:
    return os.path.join(root, "module", name.replace("-", "_"))


def make_module(root: str, driver: str) -> None:
    """A module loaded again: its driver directory and sysfs entry."""
    _module(root, driver, False, ())
