"""The kernel's mdev samples (samples/vfio-mdev/{mtty,mdpy,mbochs}.c) built on the host for
the lab guest's kernel, and Debian's mdevctl unpacked; neither installed on the host.

    python -m tests.lab.mdev_samples     # build (or find built) and print the directory

Debian's kernels build no samples, but linux-source-<major>.<minor> (the version of the
cached kernel image) holds them: only samples/vfio-mdev is taken from its tarball and built
against the headers tests/lab/variant.py unpacks. CACHE/mdev/<version>/ then holds the .ko
files and CACHE/mdev/mdevctl the unpacked mdevctl package (its /usr/bin/mdevctl and the
udev rule Debian ships). The harness names the directory on the guest's command line
(pcimgr.mdev=); test_lab_mdev.py loads the modules from it. Rebuilt only when the kernel
changes (a stamp).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from tests.lab.harness import CACHE, LabUnavailable, kernel
from tests.lab.variant import _download, headers, package_version

ROOT = CACHE / "mdev"
SAMPLES = ("mtty", "mdpy", "mbochs")


def _source_package(version: str) -> str:
    m = re.fullmatch(r"(\d+)\.(\d+)\.\d+-\d+-\w+", version)
    if m is None:
        raise LabUnavailable(f"cannot name the source package of kernel {version}")
    return f"linux-source-{m[1]}.{m[2]}"


def _extract(deb: Path, into: Path) -> Path:
    """samples/vfio-mdev from the tarball inside the package, and nothing else."""
    unpacked = into / "deb"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    tarballs = sorted(unpacked.glob("usr/src/linux-source-*.tar.*"))
    if not tarballs:
        raise LabUnavailable(f"{deb.name} holds no source tarball")
    out = into / "src"
    with tarfile.open(tarballs[0]) as tar:
        wanted = [m for m in tar.getmembers() if "/samples/vfio-mdev/" in m.name and m.isfile()]
        if not wanted:
            raise LabUnavailable(f"{tarballs[0].name} has no samples/vfio-mdev")
        for member in wanted:
            member.name = member.name.rsplit("/", 1)[-1]
            tar.extract(member, out, filter="data")
    shutil.rmtree(unpacked)
    return out


def modules() -> Path:
    """CACHE/mdev/<version> with the samples' .ko files (those that built)."""
    _, _, version = kernel()
    pinned = package_version(version)
    out = ROOT / version
    stamp = out / "stamp"
    if stamp.exists() and stamp.read_text().strip() == f"{version} {pinned}":
        return out
    build_dir = headers(version)
    (deb,) = _download((_source_package(version),), pinned)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="mdev-build-") as tmp:
        src = _extract(deb, Path(tmp))
        (src / "Kbuild").write_text("".join(f"obj-m += {s}.o\n" for s in SAMPLES))
        made = subprocess.run(["make", "-C", str(build_dir), f"M={src}", "modules"],
                              capture_output=True, text=True)
        built = [src / f"{s}.ko" for s in SAMPLES if (src / f"{s}.ko").exists()]
        if not any(k.name == "mtty.ko" for k in built):
            raise LabUnavailable(f"building the mdev samples failed:\n{made.stdout[-2000:]}"
                                 f"{made.stderr[-3000:]}")
        new = Path(tempfile.mkdtemp(dir=CACHE, prefix="mdev-"))
        new.chmod(0o755)
        for ko in built:
            shutil.copy(ko, new / ko.name)
    (new / "built").write_text(f"{time.monotonic() - started:.1f}\n")
    (new / "stamp").write_text(f"{version} {pinned}\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new.rename(out)
    return out


def mdevctl() -> Path:
    """CACHE/mdev/mdevctl: Debian's mdevctl package unpacked (usr/bin/mdevctl, its rule)."""
    out = ROOT / "mdevctl"
    if (out / "usr/bin/mdevctl").exists():
        return out
    (deb,) = _download(("mdevctl",), None)
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix="mdevctl-"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    if not (tmp / "usr/bin/mdevctl").exists():
        shutil.rmtree(tmp)
        raise LabUnavailable(f"{deb.name} has no usr/bin/mdevctl")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o755)
    tmp.rename(out)
    return out


def prepared() -> Path:
    """The directory the guest is given: the modules, with mdevctl beside them."""
    found = modules()
    mdevctl()
    return found


if __name__ == "__main__":
    started = time.monotonic()
    try:
        path = prepared()
    except LabUnavailable as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    print(path)
    print(f"[{time.monotonic() - started:.1f} s; make took {(path / 'built').read_text().strip()}"
          " s when built]", file=sys.stderr)


# -- inside the lab guest ---------------------------------------------------------------

def in_guest() -> tuple[Path | None, str]:
    """The samples' directory the harness named (pcimgr.mdev=), or None and why not."""
    from tests.lab.harness import given
    return given("mdev", "the mdev samples")


def load(directory: Path, name: str = "mtty") -> None:
    """The sample's module, after what it needs (insmod resolves no dependencies)."""
    subprocess.run(["modprobe", "-a", "vfio", "vfio_iommu_type1", "mdev"], check=True)
    subprocess.run(["insmod", str(directory / f"{name}.ko")], check=True)


def unload(name: str = "mtty") -> None:
    subprocess.run(["rmmod", name], capture_output=True)
