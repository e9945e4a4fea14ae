"""doctor --fix's initramfs-tools hook, run by the real mkinitramfs in the lab guest: the image
it builds holds the definitions' env files, the early rule and the vfio modules (docs/boot.md)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pcimgr.advice import early_claim

pytestmark = pytest.mark.lab


@pytest.mark.skipif(shutil.which("mkinitramfs") is None,
                    reason="initramfs-tools is not installed on the host (scripts/run setup)")
def test_mkinitramfs_puts_the_env_files_and_the_early_rule_in(tmp_path: Path) -> None:
    cfg = tmp_path / "pcimgr"
    (cfg / "udev").mkdir(parents=True)
    env = "0000:02:01.0_8086:100E.env"
    (cfg / "udev" / env).write_text("PCIMGR_DRIVER=vfio-pci\n")
    # a configuration directory of its own (mkinitramfs -d): the host's /etc is not touched,
    # and MODULES=list keeps the image small under the emulated CPU
    conf = tmp_path / "initramfs-tools"
    for d in ("hooks", "scripts", "conf.d"):
        (conf / d).mkdir(parents=True)
    (conf / "initramfs.conf").write_text("MODULES=list\nBUSYBOX=auto\nCOMPRESS=gzip\n")
    (conf / "modules").write_text("")
    hook = conf / "hooks" / "pcimgr"
    hook.write_text(early_claim.hook(str(cfg)))
    hook.chmod(0o755)
    image = tmp_path / "initrd.img"
    release = os.uname().release
    # mkinitramfs reads the kernel's config from /boot, where the lab's kernel is not
    # installed: the unpacked package in the lab's cache has it (/boot is the overlay here)
    config = Path(f"/boot/config-{release}")
    placed = not config.exists()
    if placed:
        from tests.lab import harness
        shutil.copy(harness.CACHE / "kernel/boot" / config.name, config)
    try:
        r = subprocess.run(["mkinitramfs", "-d", str(conf), "-o", str(image), release],
                           capture_output=True, text=True, timeout=600)
    finally:
        if placed:
            config.unlink()
    assert r.returncode == 0, r.stderr[-3000:]
    listing = subprocess.run(["lsinitramfs", str(image)], capture_output=True, text=True,
                             check=True, timeout=300).stdout.splitlines()
    assert f"etc/pcimgr/udev/{env}" in listing, listing[-50:]
    assert f"etc/udev/rules.d/{early_claim.EARLY_RULES_NAME}" in listing, listing[-50:]
    assert any("/vfio-pci.ko" in p or "/vfio_pci.ko" in p for p in listing), \
        [p for p in listing if "vfio" in p]
