"""The system daemon's guests read from its files (host/libvirt_files.py) against what the
real libvirtd answers through the binding (issue 29): the same domains, running or not,
persistent or transient, naming the same PCI functions; and anything not laid out as
libvirt lays it out is not read (the caller asks libvirt)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pcimgr.core import hostdev_xml
from pcimgr.host import libvirt_files
from tests import libvirtd

HOSTDEV = ("<hostdev mode='subsystem' type='pci' managed='yes'><source><address "
           "domain='0x0000' bus='0xfe' slot='0x0{n}' function='0x0'/></source></hostdev>")
INTERFACE = ("<interface type='hostdev' managed='yes'><mac address='52:54:00:00:fd:0{n}'/>"
             "<source><address type='pci' domain='0x0000' bus='0xfd' slot='0x0{n}' "
             "function='0x0'/></source></interface>")


def view(domains: list) -> dict[str, tuple]:
    def pci(xml: str | None) -> list[str]:
        return sorted(str(a) for a, _ in hostdev_xml.pci_devices(xml or ""))
    return {d.name: (d.uuid, d.active, d.persistent, pci(d.live_xml), pci(d.config_xml))
            for d in domains if d.name.startswith("pcimgr-files-")}


def defined(name: str, extra: str, running: bool) -> None:
    xml = libvirtd.domain_xml(name).replace("</devices>", extra + "</devices>")
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(xml)
        f.flush()
        libvirtd.virsh("destroy", name)
        libvirtd.virsh("undefine", name)
        r = libvirtd.virsh("define" if not running else "create", f.name)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def guests(libvirt_uri: str) -> Callable[[], None]:
    names = []

    def cleanup() -> None:
        for name in names:
            libvirtd.virsh("destroy", name)
            libvirtd.virsh("undefine", name)
    names += ["pcimgr-files-stopped", "pcimgr-files-running", "pcimgr-files-transient"]
    defined(names[0], HOSTDEV.format(n=1) + INTERFACE.format(n=2), False)
    defined(names[1], "", False)
    assert libvirtd.virsh("start", names[1]).returncode == 0
    defined(names[2], "", True)  # virsh create: running, never persistent
    return cleanup


def test_the_files_say_what_libvirt_says(guests: Callable[[], None]) -> None:
    from pcimgr.host import libvirt_adapter
    try:
        through = view(libvirt_adapter.connect(libvirtd.URI).domains())
        on_disk = libvirt_files.domains()
        assert on_disk is not None, "the system daemon's files were not read"
        assert view(on_disk) == through
        assert through["pcimgr-files-stopped"][2:] == (
            True, [], ["0000:fd:02.0", "0000:fe:01.0"])
        assert through["pcimgr-files-running"][1:3] == (True, True)
        assert through["pcimgr-files-transient"][1:3] == (True, False)
        # stopped: its status file goes, and the files say so too
        assert libvirtd.virsh("destroy", "pcimgr-files-running").returncode == 0
        after = libvirt_files.domains()
        assert after is not None and view(after) == view(
            libvirt_adapter.connect(libvirtd.URI).domains())
        assert view(after)["pcimgr-files-running"][1] is False
    finally:
        guests()


def test_list_names_the_guest_without_the_binding(guests: Callable[[], None],
                                                  tmp_path: Path) -> None:
    """`pcimgr list` reads the guests from the files: a poisoned `libvirt` module proves
    the binding is not imported, and the JSON holders are libvirt's (known, not null)."""
    try:
        poisoned = tmp_path / "poison"
        poisoned.mkdir()
        (poisoned / "libvirt.py").write_text("raise SystemExit('list imported libvirt')\n")
        env = os.environ | {"PYTHONPATH": f"{poisoned}:{Path(__file__).parents[1]}",
                            "LIBVIRT_DEFAULT_URI": libvirtd.URI}
        r = subprocess.run([sys.executable, "-m", "pcimgr", "list", "--all", "--json"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert all(d["holders"] is not None for d in json.loads(r.stdout))
        assert "guests unknown" not in r.stderr
    finally:
        guests()


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    config, status = tmp_path / "config", tmp_path / "status"
    for d in (config, status):
        d.mkdir()
        d.chmod(0o755)
    (config / "vm1.xml").write_text(libvirtd.domain_xml("vm1"))
    return config, status


@pytest.mark.skipif(os.geteuid() != 0, reason="libvirt's files are root's")
def test_what_is_not_libvirts_layout_is_not_read(tmp_path: Path) -> None:
    config, status = _tree(tmp_path)
    found = libvirt_files.domains(str(config), str(status))
    assert found is not None and [d.name for d in found] == ["vm1"]
    (config / "vm2.xml").symlink_to(config / "vm1.xml")
    assert libvirt_files.domains(str(config), str(status)) is None  # a link
    (config / "vm2.xml").unlink()
    (config / "vm2.xml").write_text(libvirtd.domain_xml("vm3"))
    assert libvirt_files.domains(str(config), str(status)) is None  # names another
    (config / "vm2.xml").unlink()
    config.chmod(0o777)
    assert libvirt_files.domains(str(config), str(status)) is None  # others may write it
    config.chmod(0o755)
    (status / "vm1.xml").write_text("<domstatus state='running' pid='999999999'>"
                                    + libvirtd.domain_xml("vm1") + "</domstatus>")
    found = libvirt_files.domains(str(config), str(status))
    assert found is not None and found[0].active is False  # its QEMU is gone
    (status / "vm1.xml").write_text(f"<domstatus state='running' pid='{os.getpid()}'>"
                                    + libvirtd.domain_xml("vm1") + "</domstatus>")
    found = libvirt_files.domains(str(config), str(status))
    assert found is not None and found[0].active is True and found[0].persistent is True
