"""The lab's VFIO variant driver (tests/lab/variant/pcimgr_test_vfio_pci.c), built on the host
against Debian's headers for the guest kernel, never installed on the host.

    python -m tests.lab.variant     # build (or find built) and print the modules tree

The headers (linux-headers-<abi>-amd64, -common, linux-kbuild-<major>, the version of the
cached kernel image) are fetched with `apt-get download` into CACHE/deb and unpacked with
`dpkg-deb -x` into CACHE/headers. The module goes into a tree of its own,
CACHE/variant/lib/modules/<version>: the kernel's modules hard-linked, the .ko under
extra/, `depmod`ed, so that its modules.alias has the module's `vfio_pci:` line. The
kernel's own tree (CACHE/kernel) stays as Debian ships it: with the alias in it every lab
scenario's `pcimgr detach` of an igb VF would bind the test driver, not vfio-pci.
test_lab_variant.py bind-mounts the tree over /lib/modules/<version> for its tests only;
the harness names it on the kernel command line (pcimgr.variant=).

Rebuilt only when the source, the Kbuild file or the kernel changes (a hash in
CACHE/variant/stamp).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab.harness import CACHE, HERE, LabUnavailable, kernel

SOURCE = HERE / "variant"
MODULE = "pcimgr_test_vfio_pci"
SOURCES = (f"{MODULE}.c", "Kbuild")
ROOT = CACHE / "variant"          # ROOT/lib/modules/<version>: what the guest mounts
HEADERS = CACHE / "headers"       # the three packages, unpacked
ALIAS = f"alias vfio_pci:v00008086d000010CAsv*sd*bc*sc*i* {MODULE}"


def packages(version: str) -> tuple[str, ...]:
    """6.1.0-57-amd64 -> its headers, their common part and the kbuild tools of 6.1."""
    m = re.fullmatch(r"((\d+)\.(\d+)\.\d+-\d+)-(\w+)", version)
    if m is None:
        raise LabUnavailable(f"cannot name the headers packages of kernel {version}")
    abi, major, minor, flavour = m[1], m[2], m[3], m[4]
    return (f"linux-headers-{abi}-{flavour}", f"linux-headers-{abi}-common",
            f"linux-kbuild-{major}.{minor}")


def package_version(version: str) -> str | None:
    """The Debian version of the cached kernel image (6.1.192-3): the headers must match."""
    debs = sorted((CACHE / "deb").glob(f"linux-image-{version}_*.deb"))
    if not debs:
        return None
    return subprocess.run(["dpkg-deb", "-f", str(debs[-1]), "Version"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _download(names: tuple[str, ...], pinned: str | None) -> list[Path]:
    debs = CACHE / "deb"
    debs.mkdir(parents=True, exist_ok=True)
    found = []
    for name in names:
        pattern = f"{name}_{pinned or '*'}_*.deb"
        if not list(debs.glob(pattern)):
            got = subprocess.run(["apt-get", "download", "-q",
                                  f"{name}={pinned}" if pinned else name], cwd=debs,
                                 capture_output=True, text=True)
            if got.returncode != 0:
                raise LabUnavailable(f"cannot download {name} {pinned or ''} (apt-get update "
                                     f"may help): {got.stderr.strip().splitlines()[-1:]}")
        found.append(sorted(debs.glob(pattern))[-1])
    return found


def headers(version: str) -> Path:
    """The unpacked headers directory of VERSION (its Makefile includes the common one)."""
    build = HEADERS / f"usr/src/linux-headers-{version}"
    pinned = package_version(version)
    stamp = HEADERS / ".unpacked"
    if (build / "Makefile").exists() and stamp.exists() and \
            stamp.read_text().strip() == f"{version} {pinned}":
        return build
    debs = _download(packages(version), pinned)
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix="headers-"))
    tmp.chmod(0o755)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    _relocate(tmp, HEADERS, version)
    (tmp / ".unpacked").write_text(f"{version} {pinned}\n")
    if HEADERS.exists():
        shutil.rmtree(HEADERS)
    tmp.rename(HEADERS)
    return build


def _relocate(root: Path, final: Path, version: str) -> None:
    """Make the packages unpacked in ROOT work once moved to FINAL, not under /usr: the
    arch Makefile `include`s /usr/src/linux-headers-<abi>-common/Makefile by its absolute
    path, and lib/modules/<version>/{build,source} point to /usr/src. (scripts/ and tools/
    are relative links to ../../lib/linux-kbuild-<major>.<minor>, right once all three
    packages share a root.)"""
    for link in root.rglob("*"):
        if link.is_symlink() and os.readlink(link).startswith("/"):
            target = root / os.readlink(link).lstrip("/")
            link.unlink()
            link.symlink_to(os.path.relpath(target, link.parent))
    makefile = root / f"usr/src/linux-headers-{version}/Makefile"
    text = makefile.read_text()
    fixed = re.sub(r"^include /usr/src/", f"include {final}/usr/src/", text, flags=re.M)
    if fixed == text:
        raise LabUnavailable(f"{makefile} does not include the common headers as expected")
    makefile.write_text(fixed)


def _fingerprint(version: str) -> str:
    h = hashlib.sha256(f"{version} {package_version(version)}".encode())
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (SOURCE / name).read_bytes())
    return h.hexdigest()


def modules_tree() -> Path:
    """ROOT/lib/modules/<version> with the test variant driver in it, built if the source
    changed; LabUnavailable (the reason) when it cannot be built."""
    _, modules, version = kernel()
    out = ROOT / "lib/modules" / version
    stamp = ROOT / "stamp"
    fingerprint = _fingerprint(version)
    if stamp.exists() and stamp.read_text().strip() == fingerprint and \
            (out / "extra" / f"{MODULE}.ko").exists():
        return out
    build_dir = headers(version)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="variant-build-") as tmp:
        src = Path(tmp)
        for name in SOURCES:
            shutil.copy(SOURCE / name, src / name)
        made = subprocess.run(["make", "-C", str(build_dir), f"M={src}", "modules"],
                              capture_output=True, text=True)
        ko = src / f"{MODULE}.ko"
        if made.returncode != 0 or not ko.exists():
            raise LabUnavailable(f"building {MODULE} failed:\n{made.stdout[-2000:]}"
                                 f"{made.stderr[-3000:]}")
        built = time.monotonic() - started
        new = Path(tempfile.mkdtemp(dir=CACHE, prefix="variant-"))
        new.chmod(0o755)
        tree = new / "lib/modules" / version
        tree.parent.mkdir(parents=True)
        # the kernel's modules by hard links (same file system, no copy); the index files
        # depmod rewrites are copies, so the kernel's own stay untouched
        subprocess.run(["cp", "-al", str(modules), str(tree)], check=True)
        for index in tree.glob("modules.*"):
            index.unlink()
            shutil.copy2(modules / index.name, index)
        for link in ("build", "source"):
            if (tree / link).is_symlink():
                (tree / link).unlink()
        (tree / "extra").mkdir(exist_ok=True)
        shutil.copy(ko, tree / "extra" / ko.name)
    subprocess.run(["depmod", "-b", str(new), version], check=True)
    if ALIAS not in (tree / "modules.alias").read_text().splitlines():
        shutil.rmtree(new)
        raise LabUnavailable(f"depmod wrote no `{ALIAS}` line")
    (new / "stamp").write_text(fingerprint + "\n")
    (new / "built").write_text(f"{built:.1f}\n")  # seconds the make took
    if ROOT.exists():
        shutil.rmtree(ROOT)
    new.rename(ROOT)
    return out


if __name__ == "__main__":
    started = time.monotonic()
    try:
        path = modules_tree()
    except LabUnavailable as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    print(path)
    print(f"[{time.monotonic() - started:.1f} s; make took {(ROOT / 'built').read_text().strip()}"
          " s when built]", file=sys.stderr)
