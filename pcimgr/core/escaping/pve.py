"""Proxmox VE property strings (`--map node=N,path=P,id=V:D`): the values of one entry.

PVE splits a property string at `,` and each part at the first `=`, and reads a value that
starts with `"` as quoted; there is no escape that older PVE releases read back. A value
is therefore refused unless it is made of the characters every field here (node names, PCI
paths, ids, IOMMU groups) consists of.
"""

from __future__ import annotations

import re

from pcimgr.core.escaping.refuse import refuse

_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def property_string(pairs: list[tuple[str, str]], what: str) -> str:
    """key=value,... from (key, value) pairs; what: where the values come from."""
    for key, text in pairs:
        if not _VALUE.fullmatch(text):
            raise refuse(f"{what}: {key}", text, "is not a value a Proxmox property string "
                         "carries (letters, digits, '.', '_', ':', '-')",
                         "correct the facts, gathered again on that host")
    return ",".join(f"{k}={v}" for k, v in pairs)
