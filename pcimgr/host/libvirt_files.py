"""The system daemon's guests as it keeps them on disk, read without the binding: what the
read commands need of qemu:///system (which guest's XML names which function) costs a few
file reads instead of importing libvirt, connecting and one XMLDesc per domain.

libvirt's qemu driver writes each persistent domain's configuration to
/etc/libvirt/qemu/NAME.xml and, while it runs, its live XML inside <domstatus> to
/run/libvirt/qemu/NAME.xml (both root's, mode 0600; the status file goes when the domain
stops). Read only when every directory is root's alone and each file is a regular file of
root's; anything else (another layout, a file that is not libvirt's) and the caller asks
libvirt itself. tests/test_libvirt_files.py holds it to what a real libvirtd answers.
"""

from __future__ import annotations

import os
import re
import stat

from pcimgr.core.domain import Domain

CONFIG = "/etc/libvirt/qemu"
STATUS = "/run/libvirt/qemu"
MAX = 4 << 20
_NAME = re.compile(r"<name>([^<]{1,256})</name>")
_UUID = re.compile(r"<uuid>([0-9a-fA-F-]{32,36})</uuid>")
_PID = re.compile(r"<domstatus\b[^>]*\bpid='(\d{1,10})'")


class Unreadable(Exception):
    """Not as libvirt lays it out, or not readable here: ask libvirt."""


def domains(config: str = CONFIG, status: str = STATUS) -> list[Domain] | None:
    """Every guest of the system daemon with its XML, as domains() of the adapter gives
    them; None where the files cannot stand for libvirt's answer."""
    try:
        configs = {name: _named(name, text) for name, text in _read_dir(config).items()}
        live = {name: _live(name, text) for name, text in _read_dir(status).items()}
    except Unreadable:
        return None
    found = []
    for name in sorted(set(configs) | {n for n, xml in live.items() if xml is not None}):
        config_xml, live_xml = configs.get(name), live.get(name)
        uuid = _UUID.search(live_xml or config_xml or "")
        if uuid is None:
            return None  # not a domain as libvirt writes it
        found.append(Domain(name, uuid[1].lower(), live_xml is not None,
                            config_xml is not None, live_xml, config_xml))
    return found


def _named(name: str, xml: str) -> str:
    """The domain XML of file NAME.xml, which must name NAME (libvirt's rule)."""
    m = _NAME.search(xml)
    if m is None or m[1] != name:
        raise Unreadable(name)
    return xml


def _read_dir(path: str) -> dict[str, str]:
    """NAME -> text of each NAME.xml."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError:
        raise Unreadable(path) from None
    try:
        info = os.fstat(fd)
        if info.st_uid != 0 or info.st_mode & 0o022:
            raise Unreadable(path)
        found = {}
        for entry in os.listdir(fd):
            if entry.endswith(".xml"):
                found[entry[:-4]] = _read(entry, fd)
        return found
    finally:
        os.close(fd)


def _read(name: str, dir_fd: int) -> str:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        raise Unreadable(name) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_size > MAX:
            raise Unreadable(name)
        data = os.read(fd, MAX + 1)
    finally:
        os.close(fd)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise Unreadable(name) from None


def _live(name: str, text: str) -> str | None:
    """The running domain's XML out of its status file; None when its QEMU is gone (a
    status file libvirtd has not cleaned up yet)."""
    pid = _PID.search(text)
    start, end = text.find("<domain "), text.rfind("</domain>")
    if pid is None or start < 0 or end < start:
        raise Unreadable(name)
    if not os.path.exists(f"/proc/{pid[1]}"):
        return None
    return _named(name, text[start:end + len("</domain>")])
