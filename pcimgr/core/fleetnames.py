"""Names the fleet's engines accept, checked when an option gives one (`pcimgr export`).

Kubernetes object names and namespaces are DNS-1123 (apimachinery's validation: a
ConfigMap name a subdomain of at most 253 characters, a namespace a label of at most 63),
a host name is RFC 1123 labels (what Ansible's inventory_hostname and Proxmox node names
are made of), a Neutron physical network a name of at most 64 characters (its
physical_network column) that bridge_mappings can list (no ':' or ',').
"""

from __future__ import annotations

import re

from pcimgr.core.errors import BadInput
from pcimgr.core.escaping.refuse import shown

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_HOST_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"

RULES: dict[str, tuple[re.Pattern[str], int, str]] = {
    "dns-subdomain": (re.compile(rf"{_LABEL}(\.{_LABEL})*"), 253,
                      "a Kubernetes name: lower-case letters, digits, '-' and '.', at most 253"),
    "dns-label": (re.compile(_LABEL), 63,
                  "a Kubernetes namespace: lower-case letters, digits and '-', at most 63"),
    "host": (re.compile(rf"{_HOST_LABEL}(\.{_HOST_LABEL})*"), 253,
             "a host name: letters, digits, '-' and '.', at most 253"),
    "physnet": (re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*"), 64,
                "a physical network name: letters, digits, '_', '.' and '-', at most 64"),
}


def check(kind: str, option: str, value: str) -> str:
    pattern, limit, accepted = RULES[kind]
    if len(value) > limit or not pattern.fullmatch(value):
        raise BadInput(f"{option} {shown(value)} is not {accepted}; give such a name")
    return value
