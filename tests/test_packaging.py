"""pcimgr as administrators install it: the generated man page and completions, Tab in a
real bash, the wheel and sdist, and the Debian package built from this tree and installed
into a clean Debian 12 root made by debootstrap (Debian's own click, pyudev and
libvirt bindings), where pcimgr --version, demo, man, completion and history must work."""

from __future__ import annotations

import email
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcimgr.cli import app
from pcimgr.core import errors

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import generate  # noqa: E402

PCIMGR = str(Path(sys.executable).parent / "pcimgr")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's tools, not a pyenv shim


def test_generated_files_are_current() -> None:
    """man/pcimgr.8 and completion/* are what scripts/generate.py makes of the commands
    now (run it after changing a command)."""
    for rel, text in generate.expected().items():
        assert (REPO / rel).read_text() == text, f"{rel} is stale: run scripts/generate.py"


def test_man_page_names_every_command_and_exit_code() -> None:
    page = (REPO / "man/pcimgr.8").read_text()
    for name in app.COMMANDS:
        assert f".SS pcimgr {name.replace('-', chr(92) + '-')} " in page, name
    for sub in ("vfs create", "vfs set", "sim create"):
        assert f".SS pcimgr {sub}" in page, sub
    codes = {kind.exit_code for kind in vars(errors).values()
             if isinstance(kind, type) and issubclass(kind, errors.PcimgrError)
             and isinstance(getattr(kind, "exit_code", None), int)}
    for code in sorted(codes | {0, 130}):
        assert f".TP\n.B {code}\n" in page, code


@pytest.mark.skipif(shutil.which("man") is None, reason="no man-db")
def test_man_renders_without_warnings() -> None:
    r = subprocess.run(["man", "--warnings", "-l", str(REPO / "man/pcimgr.8")],
                       capture_output=True, text=True, env={**os.environ, "MANWIDTH": "80",
                                                            "MANPAGER": "cat"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "pcimgr assign [OPTIONS] [ADDRESS] VM" in r.stdout


def bash_complete(words: list[str], env: dict[str, str] | None = None) -> list[str]:
    """What Tab offers in a real bash with the shipped completion script."""
    line = " ".join(words)
    script = (f"source {REPO / 'completion/pcimgr.bash'}; COMP_WORDS=({line}); "
              f"COMP_CWORD={len(words) - 1}; COMP_LINE={shlex.quote(line)}; "
              f"COMP_POINT={len(line)}; _pcimgr_completion pcimgr; "
              'printf "%s\\n" "${COMPREPLY[@]}"')
    path = f"{Path(PCIMGR).parent}:{os.environ['PATH']}"
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                       env={**os.environ, **(env or {}), "PATH": path})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return [line for line in r.stdout.splitlines() if line]


def test_tab_completes_addresses_drivers_and_profiles(demo_root: Path) -> None:
    root = str(demo_root)
    assert bash_complete(["pcimgr", "--sysfs-root", root, "show", "04"]) == \
        ["04:00.0", "04:00.1"]
    # global options after the command, and the forms people type
    assert bash_complete(["pcimgr", "detach", "0000:05", "--sysfs-root", root]) == []
    assert bash_complete(["pcimgr", "rebind", "pci_0000_05"], {"PCIMGR_SYSFS_ROOT": root}) \
        == ["pci_0000_05_00_0"]
    assert bash_complete(["pcimgr", "--sysfs-root", root, "bind", "04:00.0", "vf"]) == \
        ["vfio-pci"]
    assert bash_complete(["pcimgr", "--sysfs-root", root, "list", "--driver", "mlx"]) == \
        ["mlx5_core"]
    assert bash_complete(["pcimgr", "sim", "create", "x", "--profile", "se"]) == ["server"]
    assert "history" in bash_complete(["pcimgr", "hi"])
    # libvirt's domains where libvirt is asked; quietly nothing where it cannot be
    assert bash_complete(["pcimgr", "--sysfs-root", root, "--connect", "test:///default",
                          "assign", "04:00.0", "t"]) == ["test"]
    assert bash_complete(["pcimgr", "--sysfs-root", root, "assign", "04:00.0", "t"]) == []
    assert bash_complete(["pcimgr", "--sysfs-root", "/nonexistent", "show", "0"]) == []


def _build(kind: str, out: Path) -> Path:
    r = subprocess.run([sys.executable, "-m", "build", f"--{kind}", "--outdir", str(out),
                        str(REPO)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (found,) = out.glob("*.whl" if kind == "wheel" else "*.tar.gz")
    return found


@pytest.mark.skipif(os.environ.get("PCIMGR_TEST_PACKAGE") != "1",
                    reason="builds packages: set PCIMGR_TEST_PACKAGE=1 (scripts/run test does)")
def test_wheel_and_sdist(tmp_path: Path) -> None:
    wheel = _build("wheel", tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = email.message_from_bytes(z.read("pcimgr-0.1.0.dist-info/METADATA"))
    data = "pcimgr-0.1.0.data/data/share/"
    for rel in ("man/man8/pcimgr.8", "bash-completion/completions/pcimgr",
                "zsh/site-functions/_pcimgr", "fish/vendor_completions.d/pcimgr.fish",
                "pcimgr/udev/70-pcimgr.rules", "pcimgr/udev/pcimgr-apply@.service",
                "doc/pcimgr/user-guide.md"):
        assert data + rel in names, rel
    assert "pcimgr-0.1.0.dist-info/licenses/LICENSE" in names
    assert "pcimgr/py.typed" in names and not any(n.startswith("tests/") for n in names)
    assert meta["License-Expression"] == "GPL-2.0-or-later"
    assert "libvirt-python>=9.0; extra == 'libvirt'" in meta.get_all("Requires-Dist")
    assert not any(r.startswith("tabulate") and "extra ==" not in r
                   for r in meta.get_all("Requires-Dist"))  # tables are written out

    sdist = _build("sdist", tmp_path)
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for rel in ("LICENSE", "tests/conftest.py", "tests/data/pci.ids", "tests/lab/harness.py",
                "debian/control", "man/pcimgr.8", "udev/70-pcimgr.rules", "scripts/run",
                "ansible_collections/pcimgr/host/galaxy.yml"):
        assert rel in names, rel


# -- the Debian package in a clean Debian 12 root --------------------------------------

def _mirror() -> str:
    """The Debian mirror this machine's apt uses (debootstrap and the root's apt use it)."""
    for source in Path("/etc/apt/sources.list.d").glob("*.sources"):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return "http://deb.debian.org/debian"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb dpkg-buildpackage makes of this tree (as it is, committed or not)."""
    work = tmp_path_factory.mktemp("deb")
    src = work / "pcimgr"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, capture_output=True,
                       text=True, env={**os.environ, "PATH": SYSTEM_PATH})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (found,) = work.glob("pcimgr_*_all.deb")
    return found


@pytest.fixture(scope="module")
def debian_root(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Debian 12 minbase root (debootstrap; the fresh root is kept as a tarball in .cache/
    for the next run) with the package installed by apt, as an administrator would."""
    root = tmp_path_factory.mktemp("bookworm")
    cached = REPO / ".cache/bookworm-minbase.tar"
    if cached.exists():
        subprocess.run(["tar", "-xf", str(cached), "-C", str(root)], check=True)
    else:
        r = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root),
                            _mirror()], capture_output=True, text=True,
                           env={**os.environ, "PATH": SYSTEM_PATH})
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        cached.parent.mkdir(exist_ok=True)
        subprocess.run(["tar", "-cf", f"{cached}.tmp", "-C", str(root), "."], check=True)
        os.replace(f"{cached}.tmp", cached)
    for conf in Path("/etc/apt/apt.conf.d").glob("99*"):  # this machine's mirror settings
        shutil.copy(conf, root / "etc/apt/apt.conf.d" / conf.name)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    shutil.copy(deb, root / "tmp" / deb.name)
    install = (f"apt-get update -qq && apt-get install -y -qq --no-install-recommends "
               f"./tmp/{deb.name} man-db python3-libvirt bash-completion")
    r = in_root(root, install, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    yield root


def in_root(root: Path, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["chroot", str(root), "/bin/sh", "-c", script], capture_output=True,
                       text=True, env={"PATH": SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8",
                                       "DEBIAN_FRONTEND": "noninteractive"})
    if check:
        assert r.returncode == 0, f"{script}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    return r


needs_debian_tools = pytest.mark.skipif(
    os.environ.get("PCIMGR_TEST_PACKAGE") != "1" or os.geteuid() != 0
    or not all(shutil.which(t, path=SYSTEM_PATH) for t in
               ("dpkg-buildpackage", "debootstrap", "lintian", "chroot")),
    reason="builds the .deb and a Debian root as root: PCIMGR_TEST_PACKAGE=1 with debhelper, "
           "debootstrap and lintian (scripts/run test installs them and sets it)")


@needs_debian_tools
def test_deb_is_lintian_clean(deb: Path) -> None:
    """No error or warning; the informational tags that stay are overridden with a reason
    in debian/pcimgr.lintian-overrides."""
    r = subprocess.run(["lintian", "--display-info", "--pedantic", str(deb)],
                       capture_output=True, text=True, env={**os.environ, "PATH": SYSTEM_PATH})
    tags = [line for line in r.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "P:")]
    assert tags == [], r.stdout


@needs_debian_tools
def test_deb_installs_a_working_pcimgr_in_a_clean_debian_root(debian_root: Path) -> None:
    root = debian_root
    assert in_root(root, "pcimgr --version").stdout == "pcimgr, version 0.1.0\n"
    # Debian 12's own libraries, not the test venv's
    versions = in_root(root, "dpkg-query -W -f '${Package} ${Version}\\n' python3-click "
                             "python3-pyudev python3-libvirt").stdout
    assert "python3-click 8.1.3" in versions and "python3-pyudev 0.24" in versions
    demo = in_root(root, "pcimgr demo")
    assert "assign" in demo.stdout and "Traceback" not in demo.stdout + demo.stderr
    page = " ".join(in_root(root, "MANWIDTH=80 MANPAGER=cat man pcimgr").stdout.split())
    assert "pcimgr - PCI passthrough and SR-IOV device manager" in page
    assert "EXIT STATUS" in page and "pcimgr-apply@.service" in page
    for path in ("lib/udev/rules.d/70-pcimgr.rules", "lib/systemd/system/pcimgr-apply.service",
                 "lib/systemd/system/pcimgr-apply@.service",
                 "usr/share/zsh/vendor-completions/_pcimgr",
                 "usr/share/fish/vendor_completions.d/pcimgr.fish",
                 "usr/share/doc/pcimgr/user-guide.md.gz"):
        assert (root / path).is_file(), path
    # enabled for the next boot, not started by the install
    wanted = root / "etc/systemd/system/multi-user.target.wants/pcimgr-apply.service"
    assert os.readlink(wanted) == "/lib/systemd/system/pcimgr-apply.service"


@needs_debian_tools
def test_deb_tab_completion_and_history(debian_root: Path) -> None:
    in_root(debian_root, "rm -rf /tmp/host && pcimgr sim create /tmp/host >/dev/null")
    tab = in_root(debian_root, "bash -c '. /usr/share/bash-completion/completions/pcimgr; "
                               "COMP_WORDS=(pcimgr --sysfs-root /tmp/host assign 05); "
                               "COMP_LINE=\"${COMP_WORDS[*]}\"; COMP_POINT=${#COMP_LINE}; "
                               "COMP_CWORD=4; _pcimgr_completion pcimgr; "
                               "printf \"%s\\n\" \"${COMPREPLY[@]}\"'")
    assert tab.stdout == "05:00.0\n"
    in_root(debian_root, "pcimgr --sysfs-root /tmp/host detach 04:00.0 --group")
    history = in_root(debian_root, "pcimgr --sysfs-root /tmp/host history").stdout
    assert "pcimgr detach 0000:04:00.0: done" in history
    assert "0000:04:00.1: e1000e -> vfio-pci" in history
    # the libvirt binding of Debian 12 drives a dry run against libvirt's test driver
    r = in_root(debian_root, "pcimgr --sysfs-root /tmp/host --connect test:///default "
                             "assign 05:00.0 test --dry-run")
    assert "<hostdev" in r.stdout
