"""The host's addresses and routes read over a netlink socket are what `ip -j` prints.

Compared in a network namespace of its own (`unshare -n`, root) with a veth pair carrying
the shapes the survey reads: primary, secondary and host addresses, IPv6 with and without
a gateway, a default route, a static route, a route in another table, a blackhole and a
multipath route."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

SETUP = """
ip link set lo up
ip link add v0 type veth peer name v1
ip link set v0 up
ip link set v1 up
ip addr add 192.0.2.5/24 dev v0
ip addr add 192.0.2.6/24 dev v0
ip addr add 198.51.100.9/32 dev v1
ip -6 addr add 2001:db8::5/64 dev v0 nodad
ip -6 addr add 2001:db8:9::9/64 dev v1 nodad
ip route add default via 192.0.2.1 dev v0
ip route add 203.0.113.0/24 dev v1 proto static
ip route add 203.0.113.7 dev v0 table 100
ip route add blackhole 10.9.0.0/16
ip route add 10.1.0.0/16 nexthop via 192.0.2.1 dev v0 nexthop via 192.0.2.2 dev v0
ip -6 route add 2001:db8:1::/48 via 2001:db8::1 dev v0
ip -6 route add 2001:db8:2::/48 dev v1
"""

COMPARE = textwrap.dedent("""
    import json
    from pcimgr.host import facts, netlink
    from pcimgr.host.sysfs import Sysfs

    def links(found):
        return [(l["ifname"], [(a["family"], a["local"], a["prefixlen"], a["scope"])
                               for a in l["addr_info"]]) for l in found if l.get("addr_info")]

    def routes(found):
        return [(r.get("type", "unicast"), r["dst"], r.get("dev"), r.get("protocol") == "kernel")
                for r in found]

    nl = netlink.addresses_and_routes()
    ip = facts._ip_batch("addr show", "route show table all")
    by_socket = facts.LinuxFacts(Sysfs("/sys"))
    by_ip = facts.LinuxFacts(Sysfs("/sys"))
    facts._addresses_and_routes = lambda: ip
    print(json.dumps({"links": [links(nl[0]), links(ip[0])],
                      "routes": [routes(nl[1]), routes(ip[1])],
                      "facts": [[by_socket.addresses, by_socket.routes],
                                [by_ip.addresses, by_ip.routes]]}))
""")


def _in_namespace() -> dict:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare or ip is not installed")
    r = subprocess.run(["unshare", "-n", "sh", "-ec", SETUP + f'exec "{sys.executable}" -c "$0"',
                        COMPARE], capture_output=True, text=True)
    if r.returncode != 0 and ("Operation not permitted" in r.stderr or "veth" in r.stderr):
        pytest.skip(f"no network namespace with veth here: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr
    found: dict = json.loads(r.stdout)
    return found


def test_addresses_and_routes_over_netlink_are_what_ip_prints() -> None:
    found = _in_namespace()
    assert found["links"][0] == found["links"][1]
    assert found["routes"][0] == found["routes"][1]
    (addresses, routes), (ip_addresses, ip_routes) = found["facts"]
    assert (addresses, routes) == (ip_addresses, ip_routes)
    # what the survey then says, spelled out
    assert addresses == {"v0": ["192.0.2.5/24", "192.0.2.6/24", "2001:db8::5/64"],
                         "v1": ["198.51.100.9/32", "2001:db8:9::9/64"]}
    assert "default" in routes["v0"]
    assert "203.0.113.0/24" in routes["v1"] and "203.0.113.7" in routes["v0"]
    assert "2001:db8:1::/48" in routes["v0"] and "2001:db8:2::/48" in routes["v1"]
    assert not any("10.9.0.0/16" in r or "10.1.0.0/16" in r for r in routes.values())
