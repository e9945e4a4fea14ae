"""Read the PCI bus through the sysfs layer into a Host snapshot."""

from __future__ import annotations

from pcimgr.core.address import ACCEPTED_FORMS, PciAddress
from pcimgr.core.errors import BadInput
from pcimgr.core.model import BRIDGE_CLASSES, Host, IommuGroup, PciDevice, SriovInfo, no_function
from pcimgr.core.readiness import STUB, vfio_name
from pcimgr.host.sysfs import DEVICES, Directory, Gone, Sysfs

_SRIOV_ATTRS = ("sriov_numvfs", "sriov_drivers_autoprobe", "sriov_offset", "sriov_stride",
                "sriov_vf_device")
# From this many functions a whole-bus scan is split with a forked child: below it the
# fork and the transfer of the child's half (~6 us per function) cost more than they save.
SPLIT_FROM = 1024


def scan(sysfs: Sysfs) -> Host:
    names = sysfs.list_dir(DEVICES)
    devices = _scan_bus(sysfs, names)
    devices.sort(key=_by_address)
    unreadable: tuple[str, ...] = ()
    if len(devices) != len(names):  # vanished mid-scan, or there but unreadable
        read = {str(d.address) for d in devices}
        unreadable = tuple(n for n in names if n not in read and sysfs.exists(f"{DEVICES}/{n}"))
    return Host(tuple(devices), iommu_enabled=bool(sysfs.list_dir("kernel/iommu_groups")),
                unreadable=unreadable)


def _by_address(d: PciDevice) -> PciAddress:
    return d.address


def _scan_bus(sysfs: Sysfs, names: list[str]) -> list[PciDevice]:
    """Every function named, each directory opened relative to bus/pci/devices.

    A PF's VFs are the functions whose physfn names it, in address order (the
    virtfn index order: VF n sits at the PF's routing id + offset + n * stride):
    every VF's physfn link is read anyway, so the PF's virtfnN links are not.
    """
    found: list[PciDevice] | None = None
    if len(names) >= SPLIT_FROM:
        from pcimgr.host import halves  # fork and pickle: only for thousands of functions
        if halves.possible():
            found = halves.read(lambda part: _read_names(sysfs, part), names)
    if found is None:
        found = _read_names(sysfs, names)
    vfs: dict[PciAddress, list[PciAddress]] = {}
    for device in found:
        if device.physfn is not None:
            vfs.setdefault(device.physfn, []).append(device.address)
    for i, device in enumerate(found):
        if device.sriov is not None:
            mine = vfs.get(device.address)
            if mine:
                found[i] = device._replace(sriov=device.sriov._replace(vfs=tuple(sorted(mine))))
    return found


def _read_names(sysfs: Sysfs, names: list[str]) -> list[PciDevice]:
    try:
        bus = sysfs.directory(DEVICES)
    except Gone:
        return []
    found: list[PciDevice] = []
    with bus:
        for name in names:
            try:
                address = PciAddress.parse(name)
                with bus.sub(name) as d:
                    device = _read(d, address, virtfns=False)
            except (BadInput, Gone):
                continue
            if device is not None:
                found.append(device)
    return found


def read_device(sysfs: Sysfs, address: PciAddress) -> PciDevice | None:
    """One function, or None if it is not there (or vanished while being read)."""
    try:
        with sysfs.directory(f"{DEVICES}/{address}") as d:
            return _read(d, address)
    except Gone:
        return None


def _read(d: Directory, address: PciAddress, virtfns: bool = True) -> PciDevice | None:
    """virtfns: read the PF's VFs from its virtfnN links (else left empty for the caller)."""
    # uevent carries DRIVER, PCI_CLASS, PCI_ID and PCI_SUBSYS_ID in one read: the
    # values of the driver link and the vendor/device/class/subsystem files
    # (pci_uevent() in drivers/pci/pci-driver.c) for a fifth of the opens.
    event = "\n" + (d.read("uevent") or "")
    ids, klass = _field(event, "\nPCI_ID="), _field(event, "\nPCI_CLASS=")
    driver, subsys = _field(event, "\nDRIVER="), _field(event, "\nPCI_SUBSYS_ID=")
    config: bytes | None = None
    if ids is None or len(ids) != 9 or klass is None or not _hex(klass):
        # no (usable) uevent: a tree copied without it, a kernel that hides it. The
        # files, else the header anyone may read, say the same (pci-sysfs.c)
        config = d.read_bytes("config")
        ids, klass, subsys = _identity(d, config)
        if ids is None or klass is None:
            return None
        link = d.link("driver")
        driver = link.rsplit("/", 1)[-1] if link else None
    class_code = int(klass, 16)
    revision = d.read("revision")
    if revision is None:  # byte 8 of the header (the lab's 6.1 has the file; captures not)
        config = config if config is not None else d.read_bytes("config")
        revision = f"0x{config[8]:02x}" if config is not None and len(config) > 8 else None
    physfn = _address_link(d.link("physfn"))
    sriov = None
    if physfn is None:  # only a PF can have VFs of its own
        totalvfs = d.read("sriov_totalvfs")
        if totalvfs is not None:
            sriov = _sriov(d, totalvfs, virtfns)
    # Only a bound network driver registers interfaces: skip the listing otherwise.
    bridge = class_code >> 8 in BRIDGE_CLASSES
    vfio = vfio_name(driver)
    has_net = driver is not None and not vfio and driver != STUB and not bridge
    sub_vendor = sub_device = None
    if subsys is not None and len(subsys) == 9:
        sub_vendor, sub_device = subsys[:4].lower(), subsys[5:].lower()
    group = d.link("iommu_group")
    netdevs = _netdevs(d, driver) if has_net else ()
    # VFIO's own device (Linux >= 6.1), whichever driver registered it (a vendor's VFIO
    # provider shows only so): looked for on a bound endpoint with no interface
    vfio_dev = d.list("vfio-dev") if driver is not None and not bridge and not netdevs \
        else None
    return PciDevice(
        address=address,
        vendor_id=ids[:4].lower(),
        device_id=ids[5:].lower(),
        subsystem_vendor_id=sub_vendor,
        subsystem_device_id=sub_device,
        class_code=class_code,
        revision=revision[2:] if revision and revision.startswith("0x") else None,
        driver=driver,
        driver_override=override(d.read("driver_override")),
        iommu_group=_int(group.rpartition("/")[2]) if group else None,
        numa_node=_numa(d.read("numa_node")),
        netdevs=netdevs,
        sriov=sriov,
        physfn=physfn,
        vfio_dev=vfio_dev[0] if vfio_dev else None,
    )


def _identity(d: Directory, config: bytes | None) -> tuple[str | None, str | None,
                                                           str | None]:
    """(PCI_ID, PCI_CLASS, PCI_SUBSYS_ID) as uevent spells them, from the attribute files
    or the configuration header; None where neither says."""
    def four(name: str, at: int, header: bool = True) -> str | None:
        text = d.read(name)
        if text is not None and text.startswith("0x") and _hex(text[2:]):
            return text[2:].zfill(4)[-4:].upper()
        if header and config is not None and len(config) >= at + 2:
            return f"{int.from_bytes(config[at:at + 2], 'little'):04X}"
        return None
    vendor, device = four("vendor", 0), four("device", 2)
    klass = d.read("class")
    if klass is not None and klass.startswith("0x") and _hex(klass[2:]):
        code: str | None = klass[2:]
    elif config is not None and len(config) >= 12:
        code = f"{int.from_bytes(config[9:12], 'little'):X}"
    else:
        code = None
    # the subsystem ids sit at 0x2c only in a type 0 (endpoint) header
    endpoint = config is None or len(config) < 0x30 or config[0x0E] & 0x7F == 0
    sv, sd = four("subsystem_vendor", 0x2C, endpoint), four("subsystem_device", 0x2E, endpoint)
    ids = f"{vendor}:{device}" if vendor and device and vendor != "FFFF" else None
    return ids, code, f"{sv}:{sd}" if sv and sd else None


def _hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdefABCDEF" for c in text)


def _field(event: str, key: str) -> str | None:
    """KEY's value in a uevent's text (which starts with a newline), or None."""
    i = event.find(key)
    if i < 0:
        return None
    i += len(key)
    j = event.find("\n", i)
    return event[i:] if j < 0 else event[i:j]


def _netdevs(d: Directory, driver: str | None) -> tuple[str, ...]:
    """The function's interfaces; virtio-net's hang one level lower (<fn>/virtioN/net/)."""
    if driver == "virtio-pci":
        return tuple(n for child in d.list(".") or () if child.startswith("virtio")
                     for n in d.list(f"{child}/net") or ())
    return tuple(d.list("net") or ())


def scan_related(sysfs: Sysfs, addresses: tuple[PciAddress, ...]) -> Host:
    """The functions named, every member of their IOMMU groups and their VFs.

    Enough for every decision about them, without reading the whole bus: a
    change to two functions on a host with hundreds should cost two, not hundreds.
    """
    # each function read once: `rebind A B` of a pair in one group read it three times
    found = {d.address: d for d in read_many(sysfs, addresses)}
    for number in sorted({d.iommu_group for d in found.values() if d.iommu_group is not None}):
        for name in sysfs.list_dir(f"kernel/iommu_groups/{number}/devices"):
            try:
                address = PciAddress.parse(name)
            except BadInput:
                continue
            member = None if address in found else read_device(sysfs, address)
            if member is not None:
                found[address] = member
    for d in list(found.values()):
        if d.sriov is not None:
            missing = tuple(a for a in d.sriov.vfs if a not in found)
            found.update((vf.address, vf) for vf in read_many(sysfs, missing))
    return Host(tuple(sorted(found.values(), key=lambda d: d.address)),
                iommu_enabled=bool(sysfs.list_dir("kernel/iommu_groups")))


def read_group(sysfs: Sysfs, number: int) -> IommuGroup:
    """One IOMMU group from kernel/iommu_groups/N/devices, without scanning the bus."""
    members = []
    for name in sysfs.list_dir(f"kernel/iommu_groups/{number}/devices"):
        device = _read_named(sysfs, name)
        if device is not None:
            members.append(device)
    return IommuGroup(number, tuple(sorted(members, key=lambda d: d.address)))


def read_many(sysfs: Sysfs, addresses: tuple[PciAddress, ...]) -> list[PciDevice]:
    return [d for d in (read_device(sysfs, a) for a in addresses) if d is not None]


def _read_named(sysfs: Sysfs, name: str) -> PciDevice | None:
    try:
        return read_device(sysfs, PciAddress.parse(name))
    except BadInput:
        return None


def interface_function(sysfs: Sysfs, name: str) -> PciAddress:
    """The PCI function whose interface NAME is (`enp4s0f0`: what dpdk-devbind users type):
    class/net/NAME's real path, whose nearest PCI directory is the function when only its
    driver's own devices sit between (virtio-net's virtioN). BadInput otherwise: no such
    interface, a virtual one, or one on a USB or other bus below the PCI function."""
    if not name or "/" in name or name in (".", "..") or len(name) > 15:
        raise BadInput(f"not a PCI address or interface name: {name!r}; use an address "
                       "(04:00.0, 0000:04:00.0, pci_0000_04_00_0) or an interface (enp4s0f0)")
    link = sysfs.read_link(f"class/net/{name}")
    if link is None:
        raise BadInput(f"{name!r} is neither a PCI address ({ACCEPTED_FORMS}) nor an "
                       "interface of this host; `pcimgr list` shows both")
    parts = link.split("/")
    for i in range(len(parts) - 1, -1, -1):
        try:
            address = PciAddress.parse(parts[i])
        except BadInput:
            continue
        between = parts[i + 1:-2]  # the function's own devices, then net/NAME
        if all(p.startswith("virtio") for p in between):
            return address
        raise BadInput(f"{name} is an interface of a device on another bus below PCI "
                       f"function {address} ({'/'.join(between)}); give that address if "
                       "you mean the controller itself")
    raise BadInput(f"{name} is a virtual interface (not on a PCI function): nothing to "
                   "pass through")


def functions_with_ids(sysfs: Sysfs, ids: str) -> list[PciAddress]:
    """Every function whose vendor:device is IDS ("8086:10ca", any case), in bus order."""
    vendor, _, device = ids.lower().partition(":")
    return [d.address for d in scan(sysfs).devices
            if d.vendor_id == vendor and d.device_id == device]


def require(sysfs: Sysfs, address: PciAddress) -> PciDevice:
    device = read_device(sysfs, address)
    if device is None:
        raise no_function(address)
    return device


def _sriov(d: Directory, totalvfs: str, virtfns: bool = True) -> SriovInfo:
    a = {name: d.read(name) for name in _SRIOV_ATTRS}
    numvfs = _int(a["sriov_numvfs"]) or 0
    vfs = (_address_link(d.link(f"virtfn{i}")) for i in range(numvfs if virtfns else 0))
    autoprobe, vf_device = a["sriov_drivers_autoprobe"], a["sriov_vf_device"]
    return SriovInfo(
        totalvfs=_int(totalvfs) or 0,
        numvfs=numvfs,
        drivers_autoprobe=None if autoprobe is None else autoprobe == "1",
        vf_device_id=vf_device.lower().zfill(4) if vf_device else None,
        offset=_int(a["sriov_offset"]),
        stride=_int(a["sriov_stride"]),
        vfs=tuple(vf for vf in vfs if vf is not None),
    )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _numa(text: str | None) -> int | None:
    node = _int(text)
    return None if node is None or node < 0 else node


def override(text: str | None) -> str | None:
    """driver_override as read: the kernel shows "(null)" for none."""
    return None if text in (None, "", "(null)") else text


def _address_link(target: str | None) -> PciAddress | None:
    if not target:
        return None
    try:
        return PciAddress.parse(target.rpartition("/")[2])
    except BadInput:
        return None
