"""Network interface names as the kernel accepts them (dev_valid_name): what --bridge and
--source-dev may be, checked before they reach XML or `ip`."""

from __future__ import annotations

from pcimgr.core.errors import BadInput

IFNAMSIZ = 16  # including the terminating NUL


def check(name: str, option: str) -> str:
    """name, or BadInput naming the option and the rule it breaks."""
    problem = None
    if not name or name in (".", ".."):
        problem = "is empty or a dot name"
    elif len(name.encode()) > IFNAMSIZ - 1:
        problem = f"is {len(name.encode())} bytes long; the kernel allows {IFNAMSIZ - 1}"
    elif any(c.isspace() or c in "/:" or not c.isprintable() for c in name):
        problem = "contains whitespace, '/', ':' or a control character"
    if problem:
        raise BadInput(f"{option} {name!r} {problem}; give an interface name such as br0 "
                       "or eno1 (`ip link` lists them)")
    return name
