"""The only module that imports libvirt: domains, their XML, attaching and detaching devices.

libvirt is imported on first use, so commands that never talk to it do not pay
for the import. Every libvirt failure becomes a pcimgr error with a message
that says what to do; libvirt's own printing to stderr is switched off.
"""

from __future__ import annotations

import atexit
import re
from collections.abc import Callable
from typing import Any

from pcimgr.core.domain import Domain
from pcimgr.core.errors import BadInput, LibvirtFailure, NotFound, PcimgrError
from pcimgr.host.libvirt_uri import DEFAULT_URI, absent_daemon, default_uri

__all__ = ["DEFAULT_URI", "Domain", "Libvirt", "absent_daemon", "check_uri", "connect",
           "default_uri"]

_connections: dict[str, Libvirt] = {}


# The URIs pcimgr itself would use: the qemu driver's system or session daemon, locally or
# over ssh/tls, and libvirt's in-process test driver. Nothing else: the ext transport runs
# its ?command=, and query parameters (command, socket, keyfile, netcat, no_verify, ...)
# choose what runs or what is trusted; a journal or an inherited LIBVIRT_DEFAULT_URI must
# not make root run a program or talk to an arbitrary socket.
_LOCAL_URI = re.compile(r"(qemu(\+unix)?:///(system|session)|test:///default)")
_REMOTE_URI = re.compile(r"qemu\+(ssh|tls)://([A-Za-z0-9_][A-Za-z0-9._-]*@)?"
                         r"[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?/(system|session)")


def check_uri(uri: str) -> None:
    """BadInput for a URI pcimgr would not use itself (what the patterns above allow)."""
    if not (_LOCAL_URI.fullmatch(uri) or _REMOTE_URI.fullmatch(uri)):
        raise BadInput(f"refusing libvirt URI {uri!r}: pcimgr uses only qemu:///system, "
                       "qemu:///session, qemu+ssh://HOST/system (or +tls) and test:///default, "
                       "without query parameters; give one of those with --connect")


def connect(uri: str) -> Libvirt:
    """One connection per URI for the life of the process (steps reuse it); a connection
    the daemon closed (libvirtd restarted) is opened again; BadInput for a URI check_uri
    refuses, before libvirt sees it."""
    check_uri(uri)
    if uri in _connections and not _connections[uri].alive():
        _connections.pop(uri).close()
    if uri not in _connections:
        if not _connections:
            # closed before the interpreter tears libvirt's module down, which
            # would otherwise print "Exception ignored in virConnect.__del__"
            atexit.register(_close_all)
        _connections[uri] = Libvirt(uri)
    return _connections[uri]


def _close_all() -> None:
    while _connections:
        _, lv = _connections.popitem()
        lv.close()


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError as e:
        raise LibvirtFailure("the libvirt Python binding is not installed; install it with "
                             "`pip install 'pcimgr[libvirt]'` (or Debian's python3-libvirt)") from e
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come as exceptions
    return libvirt


_START_DAEMON = ("start it (`systemctl start libvirtd`, or virtqemud), or give --connect URI "
                 "for another")


class Libvirt:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.trace: Callable[[str], None] | None = None  # each change as it is made (-v)
        absent = absent_daemon(uri)
        if absent:
            raise LibvirtFailure(f"cannot connect to {uri}: {absent}; {_START_DAEMON}")
        self._lv = _libvirt()
        try:
            self._conn = self._lv.open(uri)
        except self._lv.libvirtError as e:
            raise LibvirtFailure(f"cannot connect to {uri}: {_message(e)}; is libvirtd (or "
                                 "virtqemud) running, and may this user use it? (--connect "
                                 "URI chooses another)") from e

    def alive(self) -> bool:
        """One round trip: isAlive() still says yes to a socket the daemon has closed
        until something is written to it (then "Broken pipe")."""
        try:
            self._conn.getLibVersion()
        except self._lv.libvirtError:
            return False
        return True

    def close(self) -> None:
        try:
            self._conn.close()
        except self._lv.libvirtError:
            pass

    def version(self) -> str:
        """The daemon's libvirt version, as 9.0.0."""
        try:
            n = self._conn.getLibVersion()
        except self._lv.libvirtError as e:
            raise self._failure("asking for the version", e) from e
        return f"{n // 1000000}.{n // 1000 % 1000}.{n % 1000}"

    def domain(self, name_or_uuid: str) -> Domain:
        try:
            dom = self._conn.lookupByName(name_or_uuid)
        except self._lv.libvirtError as e:
            if e.get_error_code() != self._lv.VIR_ERR_NO_DOMAIN:
                raise self._failure("looking up domain", e) from e
            try:
                dom = self._conn.lookupByUUIDString(name_or_uuid)
            except self._lv.libvirtError:
                raise NotFound(f"no domain {name_or_uuid!r} on {self.uri}; `virsh -c "
                               f"{self.uri} list --all` shows the domains there are") from None
        return self._describe(dom)

    def domains(self) -> list[Domain]:
        """Every domain with its XML: one listing (and one of the transient ones, usually
        empty), then only the XMLDesc calls libvirt needs per domain. Name, UUID and
        whether it runs (its id) come with the listing; no round trip asks for them."""
        lv = self._lv
        try:
            found = self._conn.listAllDomains(0)
            transient = {dom.UUIDString() for dom in self._conn.listAllDomains(
                lv.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)}
        except lv.libvirtError as e:
            raise self._failure("listing domains", e) from e
        described = []
        for dom in found:
            uuid = dom.UUIDString()
            active, persistent = dom.ID() != -1, uuid not in transient
            try:
                described.append(Domain(
                    dom.name(), uuid, active, persistent,
                    dom.XMLDesc(0) if active else None,
                    dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE) if persistent else None))
            except lv.libvirtError as e:
                failure = self._failure("reading a domain", e)
                if isinstance(failure, LibvirtFailure):
                    continue  # undefined while we looked
                raise failure from e
        return sorted(described, key=lambda d: d.name)

    def _describe(self, dom: Any) -> Domain:
        lv = self._lv
        try:
            active, persistent = bool(dom.isActive()), bool(dom.isPersistent())
            return Domain(dom.name(), dom.UUIDString(), active, persistent,
                          dom.XMLDesc(0) if active else None,
                          dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE) if persistent else None)
        except lv.libvirtError as e:
            raise self._failure("reading a domain", e) from e

    def attach(self, uuid: str, xml: str, live: bool, config: bool) -> None:
        self._device_call("attach", uuid, xml, live, config)

    def detach(self, uuid: str, xml: str, live: bool, config: bool) -> None:
        self._device_call("detach", uuid, xml, live, config)

    def _device_call(self, verb: str, uuid: str, xml: str, live: bool, config: bool) -> None:
        if self.trace is not None:
            where = " and ".join(w for w, on in (("live", live), ("config", config)) if on)
            self.trace(f"libvirt {self.uri}: {verb}DeviceFlags({where}) on domain {uuid}: "
                       + " ".join(xml.split()))
        lv = self._lv
        flags = (lv.VIR_DOMAIN_AFFECT_LIVE if live else 0) | (
            lv.VIR_DOMAIN_AFFECT_CONFIG if config else 0)
        try:
            dom = self._conn.lookupByUUIDString(uuid)
            call = dom.attachDeviceFlags if verb == "attach" else dom.detachDeviceFlags
            call(xml, flags)
        except lv.libvirtError as e:
            raise self._failure(f"{verb}ing the device", e) from e

    # -- networks (SR-IOV pools) ------------------------------------------------

    def network_xml(self, name: str) -> str | None:
        """The network's persistent XML, or None when there is no such network."""
        lv = self._lv
        try:
            net = self._conn.networkLookupByName(name)
            return str(net.XMLDesc(lv.VIR_NETWORK_XML_INACTIVE))
        except lv.libvirtError as e:
            if e.get_error_code() == lv.VIR_ERR_NO_NETWORK:
                return None
            raise self._failure(f"looking up network {name}", e) from e

    def network_state(self, name: str) -> tuple[bool, bool]:
        """(active, autostart) of an existing network."""
        try:
            net = self._conn.networkLookupByName(name)
            return bool(net.isActive()), bool(net.autostart())
        except self._lv.libvirtError as e:
            raise self._failure(f"reading network {name}", e) from e

    def define_network(self, xml: str, start: bool = True) -> None:
        """Define, start and autostart it (a pool must survive the host's reboot)."""
        self._trace(f"net-define{', net-start' if start else ''}, net-autostart: "
                    f"{' '.join(xml.split())}")
        lv = self._lv
        try:
            net = self._conn.networkDefineXML(xml)
            if start and not net.isActive():
                net.create()
            net.setAutostart(1)
        except lv.libvirtError as e:
            raise self._failure("defining the network", e) from e

    def undefine_network(self, name: str) -> None:
        self._trace(f"net-destroy, net-undefine {name}")
        lv = self._lv
        try:
            net = self._conn.networkLookupByName(name)
            if net.isActive():
                net.destroy()
            net.undefine()
        except lv.libvirtError as e:
            if e.get_error_code() == lv.VIR_ERR_NO_NETWORK:
                return
            raise self._failure(f"removing network {name}", e) from e

    def network_ports(self, name: str) -> list[tuple[str, str]]:
        """(domain name, the VF's address as in the port's XML) of each port a running guest
        holds on the network: which guest has which VF (libvirt 5.5+)."""
        import xml.etree.ElementTree as ET
        lv = self._lv
        try:
            net = self._conn.networkLookupByName(name)
            ports = net.listAllPorts(0) if net.isActive() else []
        except (lv.libvirtError, AttributeError):
            return []
        found = []
        for port in ports:
            try:
                root = ET.fromstring(port.XMLDesc(0))
            except (lv.libvirtError, ET.ParseError):
                continue
            owner = root.findtext("./owner/name") or "?"
            a = root.find("./plug/address")
            found.append((owner, "" if a is None else "{}:{}:{}.{}".format(
                a.get("domain", "0x0")[2:].zfill(4), a.get("bus", "0x0")[2:].zfill(2),
                a.get("slot", "0x0")[2:].zfill(2), a.get("function", "0x0")[2:])))
        return found

    def _trace(self, line: str) -> None:
        if self.trace is not None:
            self.trace(f"libvirt {self.uri}: {line}")

    def _failure(self, doing: str, e: Any) -> PcimgrError:
        lv, code, text = self._lv, e.get_error_code(), _message(e)
        if code == lv.VIR_ERR_NO_DOMAIN:
            return NotFound(f"{doing}: the domain is gone ({text})")
        if "No more available PCI slots" in text:
            return LibvirtFailure(f"{doing}: the guest has no free PCI slot; add a "
                                  "<controller type='pci' model='pcie-root-port'/> to its "
                                  "configuration (hot-plug on q35 needs a spare root port)")
        if code == lv.VIR_ERR_CONFIG_UNSUPPORTED and "passthrough" in text:
            return LibvirtFailure(f"{doing}: this host cannot pass devices through to a running "
                                  f"guest ({text}); enable the IOMMU (intel_iommu=on / "
                                  "amd_iommu=on) or attach with --config only")
        if code == lv.VIR_ERR_OPERATION_INVALID and "already" in text:
            return LibvirtFailure(f"{doing}: the domain already has this device ({text})")
        if code == getattr(lv, "VIR_ERR_DEVICE_MISSING", 99):
            return LibvirtFailure(f"{doing}: the domain does not have this device ({text})")
        if code in (lv.VIR_ERR_XML_ERROR, lv.VIR_ERR_XML_DETAIL):
            return BadInput(f"{doing}: libvirt rejected the XML ({text})")
        return LibvirtFailure(f"{doing} failed: {text}")


def _message(e: Any) -> str:
    return (e.get_error_message() or str(e)).strip()

