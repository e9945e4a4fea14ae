"""Boot a real Debian kernel in QEMU with an IOMMU and Intel NICs; run commands in it.

    python -m tests.lab.harness run 'pcimgr list --all'    # one command, one boot
    python -m tests.lab.harness run --boot desktop 'systemctl status'  # the desktop boot
    python -m tests.lab.harness console [--boot desktop]    # the boot log of `true`

The guest sees the host's / read-only (9p) under a tmpfs overlay, so it has
this checkout, its virtualenv and the host's tools at the same paths. A second
9p share carries the command in and its output and exit status out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
CACHE = Path(os.environ.get("PCIMGR_LAB_CACHE") or (
    "/var/cache/pcimgr-lab" if os.geteuid() == 0 else os.path.expanduser("~/.cache/pcimgr-lab")))
# initramfs: enough to mount 9p and overlayfs; the rest loads from the host's view
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
# Same slots every boot, so the guest numbers functions the same way
# (pcimgr/sim/profiles.py: lab() mirrors it).
TOPOLOGY = (
    "-device pcie-root-port,id=rp1,chassis=1,bus=pcie.0,addr=0x3",
    "-netdev hubport,id=n1,hubid=0", "-device igb,netdev=n1,bus=rp1,addr=0x0",
    "-device pcie-pci-bridge,id=br1,bus=pcie.0,addr=0x4",
    "-netdev hubport,id=n2,hubid=0", "-device e1000,netdev=n2,bus=br1,addr=0x1",
    "-netdev hubport,id=n3,hubid=0", "-device e1000,netdev=n3,bus=br1,addr=0x2",
    "-device pcie-root-port,id=rp2,chassis=2,bus=pcie.0,addr=0x5",
    "-netdev hubport,id=n4,hubid=0",
    "-device e1000e,netdev=n4,bus=rp2,addr=0x0.0,multifunction=on",
    "-netdev hubport,id=n5,hubid=0", "-device e1000e,netdev=n5,bus=rp2,addr=0x0.1",
    # Shapes of a host's own network and disks (issue 11): interfaces and block
    # devices that sit below a child of the function, or outside the PCI tree.
    "-netdev hubport,id=n6,hubid=0", "-device virtio-net-pci,netdev=n6,bus=pcie.0,addr=0x6",
    "-device qemu-xhci,id=xhci,bus=pcie.0,addr=0x7",
    "-netdev hubport,id=n7,hubid=0", "-device usb-net,netdev=n7,bus=xhci.0",
    "-drive if=none,id=nvm,format=raw,file={disks}/nvme.img",
    "-device nvme,drive=nvm,serial=pcimgr-nvme,bus=pcie.0,addr=0x8",
    "-device virtio-scsi-pci,id=scsi0,bus=pcie.0,addr=0x9",
    "-drive if=none,id=sd0,format=raw,file={disks}/scsi.img",
    "-device scsi-hd,drive=sd0,bus=scsi0.0",
)
# Kinds of boot (docs/lab.md): "default" runs the command from stage2.sh as PID 1;
# "desktop" adds a boot display (bochs-drm, fbcon on it) and makes systemd PID 1, with
# the command and a stand-in display-manager.service as its units (tests marked
# lab_boot("desktop"))
BOOTS = ("default", "desktop")
DESKTOP_DEVICES = ("-device VGA,bus=pcie.0,addr=0xa",)  # 00:0a.0, a slot TOPOLOGY leaves free
DESKTOP_CMDLINE = "pcimgr.init=systemd"
DISK_MB = 64  # sparse raw images, made anew for every boot
# MBR partitions (start sector, sectors) of each image, so the guest boots with
# nvme0n1p1-3 and sda1 (profiles.lab() has the same)
PARTITIONS = {"nvme.img": ((2048, 32768), (34816, 32768), (67584, 63488)),
              "scsi.img": ((2048, 129024),)}


def write_disk(path: Path, partitions: tuple[tuple[int, int], ...]) -> None:
    """A sparse raw disk with a DOS partition table (type 0x83 entries)."""
    table = bytearray(512)
    for i, (start, sectors) in enumerate(partitions):
        entry = 446 + 16 * i
        table[entry + 4] = 0x83
        table[entry + 8:entry + 12] = start.to_bytes(4, "little")
        table[entry + 12:entry + 16] = sectors.to_bytes(4, "little")
    table[510:512] = b"\x55\xaa"
    with open(path, "wb") as f:
        f.write(table)
        f.truncate(DISK_MB << 20)


class LabUnavailable(Exception):
    """QEMU or the guest kernel cannot be had here; the reason says which."""


class GuestSilent(RuntimeError):
    """QEMU exited and the guest left neither output nor a status: it never ran the command
    (a panic at boot); `console` is the end of its boot log."""

    def __init__(self, message: str, console: str) -> None:
        super().__init__(message)
        self.console = console


@dataclass
class Result:
    status: int
    output: str
    console: str
    seconds: float
    files: dict[str, str]  # what the guest left in /run/lab under the names asked for


def qemu_binary() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        raise LabUnavailable("qemu-system-x86_64 is not installed (scripts/run test installs it)")
    devices = subprocess.run([path, "-device", "help"], capture_output=True, text=True).stdout
    if '"igb"' not in devices:
        raise LabUnavailable(f"{path} has no igb device (QEMU >= 8.0 needed; Debian's "
                             "<release>-backports has it)")
    return path


def kernel() -> tuple[Path, Path, str]:
    """The guest kernel unpacked in the cache: (vmlinuz, modules dir, version)."""
    root = CACHE / "kernel"
    found = sorted(root.glob("boot/vmlinuz-*"))
    if not found:
        _unpack_kernel(root)
        found = sorted(root.glob("boot/vmlinuz-*"))
    vmlinuz = found[-1]
    version = vmlinuz.name.removeprefix("vmlinuz-")
    modules = root / "lib/modules" / version
    if not (modules / "modules.dep").exists():
        subprocess.run(["depmod", "-b", str(root), version], check=True)
    return vmlinuz, modules, version


def _unpack_kernel(root: Path) -> None:
    """Download Debian's kernel package (never installed on the host) and unpack it."""
    meta = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
                          text=True).stdout
    m = re.search(r"Depends: (linux-image-\S+)", meta)
    if m is None:
        raise LabUnavailable("apt-cache knows no linux-image-amd64 (run apt-get update)")
    debs = CACHE / "deb"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{m[1]}_*.deb")):
        got = subprocess.run(["apt-get", "download", "-q", m[1]], cwd=debs,
                             capture_output=True, text=True)
        if got.returncode != 0:
            raise LabUnavailable(f"cannot download {m[1]} (apt-get update may help): "
                                 f"{got.stderr.strip().splitlines()[-1:]}")
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix="unpack-"))
    subprocess.run(["dpkg-deb", "-x", str(next(debs.glob(f"{m[1]}_*.deb"))), str(tmp)],
                   check=True)
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)


def initramfs(modules: Path, version: str) -> Path:
    """busybox, the modules to mount 9p and overlayfs, and init.sh; rebuilt when init.sh changes."""
    out = CACHE / f"initramfs-{version}.cpio.gz"
    if out.exists() and out.stat().st_mtime > (HERE / "init.sh").stat().st_mtime:
        return out
    busybox = shutil.which("busybox")
    # a dynamic busybox names its ELF interpreter near the start of the file
    if busybox is None or b"/ld-linux" in Path(busybox).read_bytes()[:4096]:
        raise LabUnavailable("busybox-static is not installed (scripts/run test installs it)")
    deps = _module_deps(modules)
    order: list[str] = []
    for name in INITRAMFS_MODULES:
        _closure(deps, _module_path(deps, name), order)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for d in ("bin", "proc", "sys", "dev", "modules"):
            (t / d).mkdir()
        shutil.copy(busybox, t / "bin/busybox")
        shutil.copy(HERE / "init.sh", t / "init")
        for rel in order:
            shutil.copy(modules / rel, t / "modules" / os.path.basename(rel))
        (t / "modules.order").write_text("\n".join(os.path.basename(r) for r in order) + "\n")
        files = subprocess.run("find . | cpio -o -H newc --quiet | gzip -1", shell=True, cwd=t,
                               capture_output=True, check=True).stdout
    out.write_bytes(files)
    return out


def _module_deps(modules: Path) -> dict[str, list[str]]:
    deps = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        name, _, rest = line.partition(":")
        deps[name] = rest.split()
    return deps


def _module_path(deps: dict[str, list[str]], name: str) -> str:
    for rel in deps:
        base = os.path.basename(rel).split(".ko")[0]
        if base.replace("-", "_") == name.replace("-", "_"):
            return rel
    raise LabUnavailable(f"the guest kernel has no module {name}")


def _closure(deps: dict[str, list[str]], rel: str, order: list[str]) -> None:
    for dep in deps.get(rel, []):
        _closure(deps, dep, order)
    if rel not in order:
        order.append(rel)


TCG = ["-accel", "tcg", "-smp", "1"]  # two vCPUs on two host cores made the guest 10x slower


def accelerator() -> list[str]:
    """KVM only where the CPU really has vmx/svm (a PVM /dev/kvm does not boot a stock kernel)."""
    flags = Path("/proc/cpuinfo").read_text()
    if re.search(r"\b(vmx|svm)\b", flags) and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return ["-accel", "kvm", "-cpu", "host"]
    return TCG


def qemu_command(iodir: Path, vmlinuz: Path, initrd: Path, modules: Path,
                 accel: list[str], variant: Path | None = None,
                 mdev: Path | None = None, boot: str = "default") -> list[str]:
    # no_timer_check: under load the emulated IO-APIC timer can miss the kernel's boot-time
    # check, which then panics ("timer doesn't work through Interrupt-remapped IO-APIC")
    cmdline = (f"console=ttyS0 intel_iommu=on no_timer_check panic=-1 quiet loglevel=4 "
               f"pcimgr.stage2={HERE / 'stage2.sh'} pcimgr.modules={modules}")
    if variant is not None:  # the modules tree with the test variant driver (variant.py)
        cmdline += f" pcimgr.variant={variant}"
    if mdev is not None:  # the kernel's mdev samples and Debian's mdevctl (mdev_samples.py)
        cmdline += f" pcimgr.mdev={mdev}"
    desktop = DESKTOP_DEVICES if boot == "desktop" else ()
    if boot == "desktop":
        cmdline += f" {DESKTOP_CMDLINE}"
    elif boot != "default":
        raise ValueError(f"no lab boot {boot!r} (one of {', '.join(BOOTS)})")
    return [qemu_binary(), "-machine", "q35,kernel-irqchip=split", *accel, "-m", "1536",
            "-nodefaults", "-nographic", "-no-reboot", "-serial", f"file:{iodir / 'console'}",
            "-monitor", "none",
            "-device", "intel-iommu,intremap=on,caching-mode=on",
            "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", cmdline,
            "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on",
            "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,bus=pcie.0,addr=0x1",
            "-fsdev", f"local,id=labio,path={iodir},security_model=none",
            "-device", "virtio-9p-pci,fsdev=labio,mount_tag=labio,bus=pcie.0,addr=0x2",
            *[word for spec in TOPOLOGY
              for word in spec.format(disks=iodir / "disks").split(" ", 1)],
            *[word for spec in desktop for word in spec.split(" ", 1)]]


def run(command: str, timeout: int = 900, cwd: Path = CHECKOUT,
        collect: tuple[str, ...] = (), boot: str = "default") -> Result:
    """Boot, run `command` with bash as root in the guest, power off. One boot per call;
    `boot` is one of BOOTS."""
    if boot not in BOOTS:
        raise ValueError(f"no lab boot {boot!r} (one of {', '.join(BOOTS)})")
    vmlinuz, modules, version = kernel()
    initrd = initramfs(modules, version)
    variant = variant_tree()
    mdev = mdev_samples()
    accel = accelerator()
    for attempt in (1, 2):
        try:
            result = _boot(command, timeout, cwd, collect, vmlinuz, initrd, modules, accel,
                           variant, mdev, boot)
            if result is None and accel != TCG:  # KVM offered but would not start: emulate
                result = _boot(command, timeout, cwd, collect, vmlinuz, initrd, modules, TCG,
                               variant, mdev, boot)
        except GuestSilent as e:
            if attempt == 2:
                raise
            # once only: a second silent boot is a fault to see, not to hide
            last = next((line for line in reversed(e.console.splitlines()) if line.strip()),
                        "(no console output)")
            print(f"lab: the guest produced no output and ran no command (console's last "
                  f"line: {last.strip()}); booting it once more", file=sys.stderr)
            continue
        if result is None:
            raise RuntimeError("QEMU did not start the lab guest")
        return result
    raise AssertionError("unreachable")


def variant_tree() -> Path | str:
    """The modules tree with the lab's VFIO variant driver (tests/lab/variant.py; built once,
    again when its source changes), or why it cannot be had: the guest's variant tests
    skip with that (/run/lab/variant-unavailable)."""
    from tests.lab import variant
    try:
        return variant.modules_tree()
    except (LabUnavailable, subprocess.CalledProcessError, OSError) as e:
        return str(e) or type(e).__name__


def given(name: str, what: str) -> tuple[Path | None, str]:
    """Inside the guest: the directory the harness named on the command line (pcimgr.NAME=),
    or None and why it could not be had (/run/lab/NAME-unavailable)."""
    why = Path(f"/run/lab/{name}-unavailable")
    if why.exists():
        return None, f"{what} could not be built: {why.read_text().strip()}"
    m = re.search(rf"\bpcimgr\.{name}=(\S+)", Path("/proc/cmdline").read_text())
    if m is None:
        return None, f"the harness named no {what} (pcimgr.{name}=)"
    return Path(m[1]), ""


def mdev_samples() -> Path | str:
    """The kernel's mdev samples built for the lab kernel, with Debian's mdevctl beside them
    (tests/lab/mdev_samples.py), or why they cannot be had (/run/lab/mdev-unavailable)."""
    from tests.lab import mdev_samples
    try:
        return mdev_samples.prepared()
    except (LabUnavailable, subprocess.CalledProcessError, OSError, ValueError) as e:
        return str(e) or type(e).__name__


def _boot(command: str, timeout: int, cwd: Path, collect: tuple[str, ...], vmlinuz: Path,
          initrd: Path, modules: Path, accel: list[str],
          variant: Path | str = "not built", mdev: Path | str = "not built",
          boot: str = "default") -> Result | None:
    with tempfile.TemporaryDirectory(prefix="pcimgr-lab-") as tmp:
        iodir = Path(tmp)
        (iodir / "command").write_text(command + "\n")
        if not isinstance(variant, Path):
            (iodir / "variant-unavailable").write_text(variant + "\n")
        if not isinstance(mdev, Path):
            (iodir / "mdev-unavailable").write_text(mdev + "\n")
        (iodir / "cwd").write_text(str(cwd))
        (iodir / "timeout").write_text(str(timeout))
        (iodir / "disks").mkdir()
        for name, partitions in PARTITIONS.items():
            write_disk(iodir / "disks" / name, partitions)
        started = time.monotonic()
        proc = subprocess.Popen(qemu_command(iodir, vmlinuz, initrd, modules, accel,
                                             variant if isinstance(variant, Path) else None,
                                             mdev if isinstance(mdev, Path) else None, boot),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            qemu_out, _ = proc.communicate(timeout=timeout + 120)
        except subprocess.TimeoutExpired:
            raise LabUnavailable(f"the lab guest did not power off within {timeout + 120} s; "
                                 f"console:\n{_tail(iodir / 'console')}") from None
        finally:
            if proc.poll() is None:  # timeout or interrupt: leave no QEMU behind
                os.killpg(proc.pid, 9)
                proc.communicate()
        seconds = time.monotonic() - started
        status = _read(iodir / "status").strip()
        if not status:
            if proc.returncode != 0 and accel != TCG:
                return None
            message = (f"the lab guest ran no command (QEMU exit {proc.returncode}: "
                       f"{qemu_out.decode(errors='replace').strip()}); console:\n"
                       f"{_tail(iodir / 'console')}")
            if not _read(iodir / "output"):
                raise GuestSilent(message, _tail(iodir / "console"))
            raise RuntimeError(message)
        files = {name: (iodir / name).read_text() for name in collect if (iodir / name).exists()}
        return Result(int(status), _read(iodir / "output"), _read(iodir / "console"), seconds,
                      files)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(_read(path).splitlines()[-lines:])


def available() -> str | None:
    """None when the lab can run here, else the reason it cannot."""
    try:
        qemu_binary()
        kernel()
    except (LabUnavailable, subprocess.CalledProcessError, OSError) as e:
        return str(e)
    return None


def main(argv: list[str]) -> int:
    boot = "default"
    if len(argv) >= 3 and argv[1] == "--boot":
        boot = argv[2]
        argv = [argv[0], *argv[3:]]
    if len(argv) >= 2 and argv[0] == "run":
        r = run(" ".join(argv[1:]), boot=boot)
        sys.stdout.write(r.output)
        kind = "" if boot == "default" else f"{boot} boot, "
        print(f"[lab: {kind}exit {r.status}, {r.seconds:.1f} s]", file=sys.stderr)
        return r.status
    if argv == ["console"]:
        r = run("true", boot=boot)
        sys.stdout.write(r.console)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
