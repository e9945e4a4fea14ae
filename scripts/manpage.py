"""Write pcimgr(8) from the click commands (synopsis, every command with its arguments and
options, as `--help` prints them) and the sections no command knows (description, exit
status, environment, files, examples, see also).

    python scripts/manpage.py > man/pcimgr.8

tests/test_packaging.py keeps man/pcimgr.8 equal to what this prints, so the page cannot
drift from the commands; the Debian package and the wheel ship that file.
"""

from __future__ import annotations

import sys

import click

from pcimgr import __version__
from pcimgr.cli import app
from pcimgr.core import errors

DATE = "2026-12"  # the month of the last hand edit below; the commands carry their own text


def esc(text: str) -> str:
    """Text as roff reads it: backslashes doubled, hyphens as minus signs (options and
    addresses must copy and paste), no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line
                     for line in text.splitlines())


def paragraphs(text: str) -> str:
    """click's help text (blank-line paragraphs, \\b for verbatim blocks) as roff."""
    out = []
    for block in text.strip().split("\n\n"):
        if block.lstrip().startswith("\b"):
            out.append(".nf\n" + esc(block.replace("\b", "").strip("\n")) + "\n.fi")
        else:
            out.append(".PP\n" + esc(" ".join(block.split())))
    return "\n".join(out)


def options(ctx: click.Context, command: click.Command) -> str:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or "--help" in param.opts:
            continue
        names, help_text = record
        out.append(f".TP\n.B {esc(names)}\n{esc(help_text or '')}")
    return "\n".join(out)


def command_section(parent: click.Context, name: str, command: click.Command) -> list[str]:
    ctx = click.Context(command, info_name=name, parent=parent)
    usage = " ".join(command.collect_usage_pieces(ctx))
    out = [f".SS {esc(ctx.command_path)} {esc(usage)}", paragraphs(command.help or "")]
    opts = options(ctx, command)
    if opts:
        out.append(opts)
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            found = command.get_command(ctx, sub)
            if found is not None and not found.hidden:
                out += command_section(ctx, sub, found)
    return out


DESCRIPTION = r"""
.B pcimgr
reads the PCI bus of a KVM host, tells which functions can be passed through to a guest
and why not, moves functions between their host drivers and
.BR vfio\-pci ,
creates SR\-IOV virtual functions with their MAC, VLAN and trust settings, attaches them
to libvirt guests and gives them back to the driver they had, and keeps definitions
across reboots through udev.
.PP
Every changing command validates everything first, then plans, then acts:
.B \-\-dry\-run
prints the plan (the exact sysfs writes and libvirt calls), a failure or a signal rolls
back what was done, and a journal and a lock make a killed or concurrent run safe.
pcimgr refuses to take a function the host depends on \(em an interface with the host's
addresses or routes, a disk that is mounted, swap or under LVM, behind virtio, USB, SCSI
or NVMe multipath \(em unless given
.BR \-\-force ,
and never takes a chipset function.
.PP
Addresses are written
.BR 04:00.0 ,
.B 0000:04:00.0
or
.BR pci_0000_04_00_0 ;
a NIC function may be named by its interface
.RB ( enp4s0f0 ).
Read commands need no root and have
.B \-\-json
with a stable schema; notices and warnings go to standard error.
""".strip()

EXAMPLES = r"""
.nf
pcimgr list
pcimgr assign 04:00.0 vm1 \-\-group
pcimgr release 04:00.0
pcimgr detach 04:00.0 \-\-group \-\-dry\-run
pcimgr vfs create 05:00.0 4
pcimgr vfs set 05:00.0 0 \-\-mac 52:54:00:5e:00:01 \-\-vlan 100
pcimgr define 04:00.0 \-\-driver vfio\-pci \-\-group
pcimgr history
pcimgr sim create /tmp/host && pcimgr \-\-sysfs\-root /tmp/host list \-\-all
.fi
""".strip()

ENVIRONMENT = [
    ("PCIMGR_SYSFS_ROOT", "as --sysfs-root."),
    ("PCIMGR_STATE_DIR", "as --state-dir."),
    ("PCIMGR_CONFIG_DIR", "as --config-dir."),
    ("PCIMGR_LOCK_TIMEOUT", "as --lock-timeout."),
    ("LIBVIRT_DEFAULT_URI", "the libvirt connection when --connect is not given."),
    ("PCIMGR_PCI_IDS", "a pci.ids file to name devices from, instead of the system's."),
    ("NO_COLOR", "any value turns colour off."),
]

FILES = [
    ("/etc/pcimgr/devices/", "device definitions (define, apply, status), one JSON file "
                             "per function."),
    ("/etc/pcimgr/udev/", "the environment files the udev rules match defined functions "
                          "by."),
    ("/var/lib/pcimgr/", "the journal of a running change, original-driver records, the "
                         "change history."),
    ("/run/pcimgr/", "the host lock that serialises changes."),
    ("/lib/udev/rules.d/70-pcimgr.rules", "applies a definition when its function "
                                         "appears."),
    ("/lib/udev/rules.d/71-pcimgr-mdev.rules", "starts a parent's auto mdevs (their "
                                              "definitions in /etc/mdevctl.d) when it "
                                              "registers."),
    ("/etc/mdevctl.d/", "mdev definitions, one JSON file per mdev, shared with mdevctl."),
    ("/lib/systemd/system/pcimgr-apply.service",
     "applies every definition at boot, before libvirt starts guests."),
    ("/lib/systemd/system/pcimgr-apply@.service",
     "applies one function's definition, started by the udev rules; its output is in the "
     "journal (journalctl -u 'pcimgr-apply@*')."),
]

SEE_ALSO = ("lspci(8), virsh(1), driverctl(8), udevadm(8), "
            "/usr/share/doc/pcimgr/ (the user guide and the --json schemas)")


def exit_status() -> str:
    """Every exit code the exception family defines, from the classes' own words."""
    rows = [(0, "success: the change is complete and recorded."),
            (1, "internal error (a bug: please report it with the -v output).")]
    for kind in (errors.BadInput, errors.NotFound, errors.Refused, errors.NeedsRoot,
                 errors.LibvirtFailure, errors.RolledBack, errors.Busy, errors.KernelError,
                 errors.Mismatch, errors.Damaged):
        doc = " ".join((kind.__doc__ or "libvirt failure.").split("\n\n")[0].split())
        rows.append((kind.exit_code, doc))
    rows.append((130, "interrupted by SIGINT (143: SIGTERM) before any change; during a "
                      "change it is 7, after the rollback."))
    return "\n".join(f".TP\n.B {code}\n{esc(text)}" for code, text in rows)


def labelled(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f".TP\n.B {esc(name)}\n{esc(text)}" for name, text in rows)


def page() -> str:
    root = click.Context(app.cli, info_name="pcimgr")
    commands = [section for name in app.cli.list_commands(root)
                for section in command_section(root, name, app.load_command(name))]
    aliases = ", ".join(f"{a} ({t})" for a, t in sorted(app.ALIASES.items()))
    return "\n".join([
        '.\\" Generated by scripts/manpage.py from the click commands; do not edit.',
        f'.TH PCIMGR 8 "{DATE}" "pcimgr {__version__}" "System Administration"',
        ".SH NAME", "pcimgr \\- PCI passthrough and SR\\-IOV device manager for KVM/libvirt "
        "hosts",
        ".SH SYNOPSIS", ".B pcimgr", "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR "
        "[\\fIARGS\\fR]...",
        ".SH DESCRIPTION", DESCRIPTION,
        ".SH GLOBAL OPTIONS",
        "They may stand before or after the command.",
        options(root, app.cli),
        ".SH COMMANDS",
        esc(f"Aliases: {aliases}."),
        *commands,
        ".SH EXIT STATUS",
        "Every expected error is one line on standard error, naming the problem and the "
        "fix.",
        exit_status(),
        ".SH ENVIRONMENT", labelled(ENVIRONMENT),
        ".SH FILES", labelled(FILES),
        ".SH EXAMPLES", EXAMPLES,
        ".SH SEE ALSO", esc(SEE_ALSO),
    ]) + "\n"


if __name__ == "__main__":
    sys.stdout.write(page())
