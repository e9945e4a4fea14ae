"""What the kernel shows of the desktop boot's display (the lab's `-device VGA` at 00:0a.0,
driven by bochs-drm, fbcon on it): the function's ids and boot_vga, its /proc/iomem lines,
the vtconsoles, where fb0 and the drm entries lead, the bochs module's state, hugepages
and the online CPUs. Recorded in the desktop boot into fixtures/display.json (refresh:
python -m tests.lab.refresh display); tests/lab/test_lab_desktop.py checks it is still
what the kernel says. Taken with display-manager.service running and fbcon bound.

    python -m tests.lab.display [OUT.json]    # in the desktop boot: print or write the record
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent / "fixtures" / "display.json"
VGA = "0000:00:0a.0"
DEVICE = Path("/sys/bus/pci/devices") / VGA
HUGEPAGES = Path("/sys/kernel/mm/hugepages")
# firmware framebuffers a real host may have claimed the boot display's memory with
BOOT_FRAMEBUFFERS = re.compile(r"BOOTFB|efifb|vesafb|simple-framebuffer|Video ROM")


def record() -> dict[str, Any]:
    return {
        "kernel": os.uname().release,
        "function": {a: _read(DEVICE / a) for a in ("vendor", "device", "class", "boot_vga")},
        "iomem": iomem_lines(VGA),
        "iomem_boot_framebuffers": [line for line in _iomem()
                                    if BOOT_FRAMEBUFFERS.search(line)],
        # the kernel numbers vtcons, framebuffers and DRM minors: recorded by what they are
        "vtconsoles": sorted(({"name": _read(d / "name"), "bind": _read(d / "bind")}
                              for d in Path("/sys/class/vtconsole").iterdir()),
                             key=lambda c: str(c["name"])),
        "framebuffers": [_target(fb / "device") for fb in sorted((DEVICE / "graphics").iterdir())],
        "drm": {re.sub(r"\d+$", "", d.name): re.sub(r"\d+$", "N", str(_target(d)))
                for d in sorted((DEVICE / "drm").iterdir())},
        "bochs": {"refcnt": _read(Path("/sys/module/bochs/refcnt")),
                  "holders": sorted(os.listdir("/sys/module/bochs/holders")),
                  "initstate_exists": Path("/sys/module/bochs/initstate").exists()},
        "hugepages": {"sizes": sorted(os.listdir(HUGEPAGES)),
                      "nr_hugepages_2048kB_after_writing_4": _try_hugepages(4)},
        "cpu_online": _read(Path("/sys/devices/system/cpu/online")),
    }


def iomem_lines(address: str) -> list[str]:
    """The /proc/iomem lines of the function's BARs, each with the lines nested below it."""
    lines, out, depth = _iomem(), [], None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if depth is not None and indent > depth:
            out.append(line)
            continue
        depth = None
        if line.endswith(f": {address}"):
            out.append(line)
            depth = indent
    return out


def _try_hugepages(count: int) -> str | None:
    """Write nr_hugepages=count in hugepages-2048kB, read it back, restore the old value."""
    path = HUGEPAGES / "hugepages-2048kB/nr_hugepages"
    old = path.read_text()
    try:
        path.write_text(str(count))
        return path.read_text().strip()
    except OSError as e:
        return f"error: {e.strerror}"
    finally:
        path.write_text(old)


def _iomem() -> list[str]:
    return Path("/proc/iomem").read_text().splitlines()


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _target(path: Path) -> str:
    """Where a sysfs entry resolves to, below /sys."""
    return os.path.relpath(os.path.realpath(path), "/sys")


if __name__ == "__main__":
    data = json.dumps(record(), indent=1) + "\n"
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(data)
    else:
        sys.stdout.write(data)
