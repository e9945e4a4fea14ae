"""NVIDIA's vendor vGPU interface on the simulated kernel: each VF of a PF whose profile has
`vgpu` gets nvidia/creatable_vgpu_types and nvidia/current_vgpu_type, and writes to the
latter set or clear the VF's type.

The rule (from NVIDIA's description of the interface; no such GPU is in the lab): the VFs
share the GPU's framebuffer; while any VF has a type, the others can take only types of
that framebuffer size (NVIDIA's default, homogeneous by size), and only while enough is
free; a VF that has a type lists nothing more. Setting a type on a VF that has one is
EBUSY (clear it with 0 first), a type not in its list EINVAL, clearing a VF whose group a
process holds EBUSY.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from pcimgr.sim import undo

DIR = "nvidia"


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def lay_out(vf_dir: str) -> None:
    d = os.path.join(vf_dir, DIR)
    undo.makedirs(d)
    undo.write_text(os.path.join(d, "current_vgpu_type"), "0\n")
    undo.write_text(os.path.join(d, "creatable_vgpu_types"), "")


def _current(vf_dir: str) -> int:
    with open(os.path.join(vf_dir, DIR, "current_vgpu_type")) as f:
        return int(f.read().strip() or 0)


def refresh(pf_dir: str, spec: dict) -> None:
    """Every VF's creatable_vgpu_types, after any VF's type changed (a VF off its driver
    has none, and no type)."""
    vfs = [v for v in _vfs(pf_dir) if os.path.isdir(os.path.join(v, DIR))]
    size = {t[0]: t[2] for t in spec["types"]}
    used = [size.get(_current(v), 0) for v in vfs]
    free = spec["framebuffer"] - sum(used)
    taken = {s for s in used if s}
    for vf in vfs:
        if _current(vf):
            listed = []
        else:
            listed = [t for t in spec["types"] if t[2] <= free and (not taken or t[2] in taken)]
        undo.write_text(os.path.join(vf, DIR, "creatable_vgpu_types"),
                        "".join(f"{t[0]} : {t[1]}\n" for t in listed))


def _vfs(pf_dir: str) -> list[str]:
    links = sorted((n for n in os.listdir(pf_dir) if n.startswith("virtfn")),
                   key=lambda n: int(n[6:]))
    return [os.path.realpath(os.path.join(pf_dir, n)) for n in links]


def write(vf_dir: str, spec: dict, value: str, commit: Callable[[], None],
          held: bool) -> None:
    try:
        wanted = int(value.strip())
    except ValueError:
        raise _fail(errno.EINVAL) from None
    now = _current(vf_dir)
    if wanted == 0:
        if now and held:
            raise _fail(errno.EBUSY)
    elif now:
        raise _fail(errno.EBUSY)
    else:
        with open(os.path.join(vf_dir, DIR, "creatable_vgpu_types")) as f:
            listed = {int(line.split(":")[0]) for line in f if ":" in line}
        if wanted not in listed:
            raise _fail(errno.EINVAL)
    commit()
    undo.write_text(os.path.join(vf_dir, DIR, "current_vgpu_type"), f"{wanted}\n")
    refresh(os.path.realpath(os.path.join(vf_dir, "physfn")), spec)
