"""The kernel command line that turns the IOMMU on, through the bootloader the host uses
(`doctor --fix`, docs/boot.md).

The words: intel_iommu=on on an Intel CPU, amd_iommu=on on an AMD (or Hygon) one (the
vendor from /proc/cpuinfo), and iommu=pt. Only the missing ones are added. The command
line is read as the kernel reads it, the last value of a switch winning: one whose last
value is on (intel_iommu=on,sm_on), any iommu= but off, count as present; one that ends
with the IOMMU off (intel_iommu=off, iommu=off) or blacklists a vfio module is refused,
not overridden.

The bootloader, in this order:
- grubby (Fedora, RHEL): `grubby --update-kernel=ALL --args=...` where an entry in
  /boot/loader/entries lacks a word; grubby also keeps /etc/default/grub in step;
- kernel-install / systemd-boot: /etc/kernel/cmdline, then `kernel-install add` for the
  running kernel (`proxmox-boot-tool refresh` on Proxmox);
- GRUB: /etc/default/grub's GRUB_CMDLINE_LINUX_DEFAULT (else GRUB_CMDLINE_LINUX; else a
  GRUB_CMDLINE_LINUX_DEFAULT line appended), everything else byte for byte, then
  update-grub (else grub-mkconfig -o /boot/grub/grub.cfg).
What GRUB passes is every assignment, += and "$VAR ..." addition in /etc/default/grub
and then /etc/default/grub.d/*.cfg. A layout it cannot read (unbalanced quotes, a line
continuation, shell expansion, the variable set twice or again in grub.d) is refused,
naming the file; a linked file is edited through to its target (edits.target).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pcimgr.advice.edits import Edit, Part, decode, shown, target
from pcimgr.core.errors import Refused
from pcimgr.host.machine import Machine

VENDORS = {"GenuineIntel": "intel_iommu", "AuthenticAMD": "amd_iommu",
           "HygonGenuine": "amd_iommu"}
GRUB = "etc/default/grub"
KERNEL_CMDLINE = "etc/kernel/cmdline"
ENTRIES = "boot/loader/entries"


def wanted(machine: Machine) -> tuple[str, list[str]]:
    """The CPU's vendor and the words it needs: its IOMMU switch and iommu=pt."""
    data = machine.read_system_file("proc/cpuinfo") or b""
    vendor = next((line.split(":", 1)[1].strip() for line in
                   data.decode("utf-8", "replace").splitlines()
                   if line.split(":", 1)[0].strip() == "vendor_id"), None)
    if vendor not in VENDORS:
        raise Refused(f"cannot tell an Intel or AMD CPU from {shown(machine, 'proc/cpuinfo')} "
                      f"(vendor_id {vendor or 'missing'}): turn the IOMMU on in the kernel "
                      "command line by hand (docs/boot.md)")
    return vendor, [f"{VENDORS[vendor]}=on", "iommu=pt"]


# the modules vfio-pci needs; a blacklist of any keeps passthrough from working
VFIO_MODULES = ("vfio", "vfio_pci", "vfio_pci_core", "vfio_iommu_type1")
BLACKLISTS = ("module_blacklist", "modprobe.blacklist")


def blacklisted(word: str) -> str | None:
    """The vfio module a command-line word keeps from loading (vfio-pci spelled either way)."""
    key, _, value = word.partition("=")
    if key not in BLACKLISTS:
        return None
    return next((m for m in value.split(",") if m.replace("-", "_") in VFIO_MODULES), None)


def missing(words: list[tuple[str, str]], want: list[str]) -> list[str]:
    """The wanted words that the command line lacks as the kernel reads it: words are
    (word, where it is set) in the order the kernel sees them, and the last value of a
    switch wins (intel_iommu=on then intel_iommu=off: off). Refused when the line turns
    the IOMMU off or blacklists a vfio module."""
    for word, where in words:
        bad = blacklisted(word)
        if bad:
            raise Refused(f"{where} keeps {bad} from loading ({word}), so no function can go "
                          "to vfio-pci: remove it there and run `pcimgr doctor --fix` again")
    lacking = []
    for w in want:
        key = w.split("=", 1)[0]
        if key not in _SWITCHES:  # a list (initcall_blacklist=a,b): present when it names it
            value = w.split("=", 1)[1]
            if not any(word.startswith(key + "=") and value in word.split("=", 1)[1].split(",")
                       for word, _ in words):
                lacking.append(w)
            continue
        state: tuple[str, str, str] | None = None  # (on or off or a value, word, where)
        for word, where in words:
            if not word.startswith(key + "="):
                continue
            for v in word.split("=", 1)[1].split(","):
                if key == "iommu" or v in ("on", "off"):
                    state = (v, word, where)
        if state is not None and state[0] == "off":
            raise Refused(f"{state[2]} turns the IOMMU off ({state[1]}): remove that word and "
                          "run `pcimgr doctor --fix` again")
        if state is None or (key != "iommu" and state[0] != "on"):
            lacking.append(w)
    return lacking


_SWITCHES = ("intel_iommu", "amd_iommu", "iommu")


def plan(machine: Machine, extra: tuple[str, ...] = ()) -> Part:
    """extra: further words other features need (a hand-off's sysfb switch)."""
    vendor, want = wanted(machine)
    want = want + [w for w in extra if w not in want]
    vendor_word = want[0]
    part: Part | None = None
    if machine.find_program("grubby"):
        part = _grubby(machine, want)
    elif machine.read_system_file(KERNEL_CMDLINE) is not None:
        part = _kernel_cmdline(machine, want)
    elif machine.read_system_file(GRUB) is not None:
        regenerate = _grub_regenerate(machine)
        if regenerate:
            part = _grub(machine, want, regenerate)
    if part is not None:
        part.lines.insert(0, f"CPU: {vendor}, so the kernel command line needs "
                          f"{' '.join(want[:2])}" + (f"; and {' '.join(want[2:])} for the "
                                                      "hand-off" if want[2:] else ""))
        return part
    raise Refused(f"cannot tell the bootloader: no grubby, no "
                  f"{shown(machine, KERNEL_CMDLINE)} (kernel-install, systemd-boot) and no "
                  f"{shown(machine, GRUB)} with update-grub or grub-mkconfig; add "
                  f"{vendor_word} iommu=pt to the kernel command line by hand")


def _say(part: Part, where: str, lacking: list[str], want: list[str]) -> None:
    part.lines.append(f"kernel command line ({where}: " + (
        f"add {' '.join(lacking)}" if lacking else f"has {' '.join(want)}"))


# --- grubby -------------------------------------------------------------------------------

def _grubby(machine: Machine, want: list[str]) -> Part:
    entries = [n for n in machine.list_system_dir(ENTRIES) if n.endswith(".conf")]
    by_hand = f"run `grubby --update-kernel=ALL --args=\"{' '.join(want)}\"` by hand"
    if not entries:
        raise Refused(f"grubby without boot entries in {shown(machine, ENTRIES)} (no BLS) is "
                      f"not one pcimgr can read; {by_hand}")
    lacking: list[str] = []
    for name in entries:
        rel = f"{ENTRIES}/{name}"
        text = decode(machine, rel, machine.read_system_file(rel) or b"", by_hand)
        words = [w for line in text.splitlines() if line.split(None, 1)[:1] == ["options"]
                 for w in line.split()[1:]]
        if "$kernelopts" in words:  # RHEL 8: the options are in grubenv
            env = decode(machine, "boot/grub2/grubenv",
                         machine.read_system_file("boot/grub2/grubenv") or b"", by_hand)
            words += [w for line in env.splitlines() if line.startswith("kernelopts=")
                      for w in line.split("=", 1)[1].split()]
        where = shown(machine, rel)
        lacking += [w for w in missing([(w, where) for w in words], want) if w not in lacking]
    part = Part()
    _say(part, f"grubby): {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in "
         f"{shown(machine, ENTRIES)}", lacking, want)
    if lacking:
        part.commands.append(["grubby", "--update-kernel=ALL", f"--args={' '.join(lacking)}"])
    return part


# --- kernel-install, systemd-boot -----------------------------------------------------------

def _kernel_cmdline(machine: Machine, want: list[str]) -> Part:
    rel = target(machine, KERNEL_CMDLINE)
    path = shown(machine, rel)
    before = machine.read_system_file(rel) or b""
    text = decode(machine, rel, before, f"add {' '.join(want)} to it by hand")
    lacking = missing([(w, path) for w in text.split()], want)
    part = Part()
    if machine.find_program("proxmox-boot-tool"):
        regenerate = ["proxmox-boot-tool", "refresh"]
    elif machine.find_program("kernel-install"):
        release = (machine.read_system_file("proc/sys/kernel/osrelease") or b"").decode().strip()
        regenerate = ["kernel-install", "add", release, f"/boot/vmlinuz-{release}"]
    else:
        raise Refused(f"{path} is there but neither kernel-install nor proxmox-boot-tool: "
                      f"cannot tell which bootloader reads it; add {' '.join(want)} to the "
                      "kernel command line by hand")
    _say(part, f"kernel-install): {path}", lacking, want)
    if lacking:
        kept = text.rstrip()
        tail = text[len(kept):] or "\n"
        after = kept + (" " if kept else "") + " ".join(lacking) + tail
        part.edits.append(Edit(rel, before, after.encode()))
        part.commands.append(regenerate)
    return part


# --- GRUB ----------------------------------------------------------------------------------

_ASSIGN = re.compile(r"[ \t]*(?:export[ \t]+)?(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)(\+?=)(.*)")
_BARE = re.compile(r"[^\s\"'$`\\;&|<>()#]*")
_TAIL = re.compile(r"[ \t]*(#.*)?")
_VARS = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")  # the order of the words
GRUB_D = "etc/default/grub.d"


@dataclass(frozen=True)
class _Set:
    """One assignment: VAR=value (a new value) or VAR+=value, VAR="$VAR value" (added)."""

    var: str
    adds: bool
    value: str
    line: int     # from 0
    end: int      # where the value ends in the line
    quote: str


def _grub_regenerate(machine: Machine) -> list[str] | None:
    if machine.find_program("update-grub"):
        return ["update-grub"]
    for program, cfg in (("grub-mkconfig", "/boot/grub/grub.cfg"),
                         ("grub2-mkconfig", "/boot/grub2/grub.cfg")):
        if machine.find_program(program):
            return [program, "-o", cfg]
    return None


def _value(rest: str) -> tuple[str, int, str]:
    """(the value, where it ends in rest, its quote); ValueError saying why it is not one
    quoted string or word pcimgr can edit."""
    if rest.rstrip().endswith("\\"):
        raise ValueError("a line continuation")
    if rest[:1] in ("'", '"'):
        q = rest[0]
        end = rest.find(q, 1)
        if end < 0:
            raise ValueError("unbalanced quotes")
        value, end, quote = rest[1:end], end + 1, q
        if q == '"' and any(c in value for c in "$`\\"):
            raise ValueError("shell expansion ($, `, \\)")
    else:
        m = _BARE.match(rest)
        assert m is not None  # matches the empty string
        value, end, quote = m.group(), m.end(), ""
    if not _TAIL.fullmatch(rest[end:]):
        tail = rest[end:]
        raise ValueError("unbalanced quotes" if tail.count('"') % 2 or tail.count("'") % 2
                         else "more than one quoted string" if tail[:1] in "'\"" else
                         "shell expansion ($, `, \\)" if tail[:1] in "$`\\" else
                         f"more after the value ({tail.strip()!r})")
    return value, end, quote


def _assignments(path: str, text: str, by_hand: str) -> list[_Set]:
    """The file's GRUB_CMDLINE_LINUX(_DEFAULT) assignments in order; Refused naming the
    line when one is not a value pcimgr can read."""
    found = []
    for n, line in enumerate(text.split("\n")):
        m = _ASSIGN.fullmatch(line)
        if not m:
            continue
        var, rest, start = m[1], m[3], m.start(3)
        adds = m[2] == "+="
        own = re.match("([\"'])\\$(?:\\{" + var + "\\}|" + var + "\\b) ?", rest)
        if own and own[1] == '"':  # "$VAR more": more is added, as += does
            adds, rest, start = True, '"' + rest[own.end():], start + own.end() - 1
        try:
            value, end, quote = _value(rest)
        except ValueError as e:
            raise Refused(f"cannot edit {path}: its {var} (line {n + 1}) has {e}; make it one "
                          f"quoted string on one line, or {by_hand}") from None
        found.append(_Set(var, adds, value, n, start + end, quote))
    return found


def _grub(machine: Machine, want: list[str], regenerate: list[str]) -> Part:
    rel = target(machine, GRUB)
    path = shown(machine, rel)
    by_hand = f"add {' '.join(want)} to its GRUB_CMDLINE_LINUX_DEFAULT by hand"
    before = machine.read_system_file(rel) or b""
    text = decode(machine, rel, before, by_hand)
    lines = text.split("\n")
    sets = _assignments(path, text, by_hand)
    found: dict[str, _Set] = {}  # variable -> its one assignment of a new value
    for a in sets:
        if a.adds:
            continue
        if a.var in found:
            raise Refused(f"cannot edit {path}: {a.var} is set on lines {found[a.var].line + 1} "
                          f"and {a.line + 1}; keep one and run `pcimgr doctor --fix` again")
        found[a.var] = a
    if not found and not any(line.lstrip().startswith("GRUB_") for line in lines):
        raise Refused(f"cannot edit {path}: it has no GRUB_ setting, not GRUB's defaults as "
                      f"pcimgr knows them; {by_hand}")
    var = "GRUB_CMDLINE_LINUX_DEFAULT" if ("GRUB_CMDLINE_LINUX_DEFAULT" in found
                                           or not found) else "GRUB_CMDLINE_LINUX"
    words: dict[str, list[tuple[str, str]]] = {v: [] for v in _VARS}
    for where, assignments in [(path, sets), *_grub_d(machine, var, by_hand)]:
        for a in assignments:
            new = [(w, f"{where} (line {a.line + 1})") for w in a.value.split()]
            words[a.var] = words[a.var] + new if a.adds else new
    lacking = missing([w for v in _VARS for w in words[v]], want)
    part = Part()
    _say(part, f"GRUB): {path} {var}", lacking, want)
    if not lacking:
        return part
    added = " ".join(lacking)
    if var in found:
        a = found[var]
        line = lines[a.line]
        sep = "" if not a.value or a.value[-1] in " \t" else " "
        if a.quote:
            lines[a.line] = line[:a.end - 1] + sep + added + line[a.end - 1:]
        else:
            lines[a.line] = line[:a.end - len(a.value)] + f'"{a.value}{sep}{added}"' \
                + line[a.end:]
        after = "\n".join(lines)
    else:
        after = text + ("" if text.endswith("\n") or not text else "\n") \
            + f'{var}="{added}"\n'
    part.edits.append(Edit(rel, before, after.encode()))
    part.commands.append(regenerate)
    return part


def _grub_d(machine: Machine, var: str, by_hand: str) -> list[tuple[str, list[_Set]]]:
    """update-grub sources /etc/default/grub.d/*.cfg, in order, after /etc/default/grub:
    their assignments (one that sets var anew would make the edit count for nothing)."""
    out = []
    for name in machine.list_system_dir(GRUB_D):
        if not name.endswith(".cfg"):
            continue
        rel = f"{GRUB_D}/{name}"
        where = shown(machine, rel)
        text = decode(machine, rel, machine.read_system_file(rel) or b"", by_hand)
        sets = _assignments(where, text, f"move its {var} into {shown(machine, GRUB)}")
        for a in sets:
            if a.var == var and not a.adds:
                raise Refused(f"{where} sets {var} after {shown(machine, GRUB)}, so an edit "
                              f"there would count for nothing; add the words to {where} by "
                              f"hand, or move its {var} into {shown(machine, GRUB)}")
        out.append((where, sets))
    return out
