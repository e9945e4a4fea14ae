"""Command line: the `pcimgr` group, its global options, what every command shares (the
context, options, the validate-plan-act runner) and the error mapping. The commands
themselves are in pcimgr/commands/, one module per subject. No logic here."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pcimgr import __version__
from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput, Interrupted, NeedsRoot, NotFound, PcimgrError

if TYPE_CHECKING:
    from pcimgr.host.machine import Machine
    from pcimgr.host.sysfs import Sysfs

_verbose = False


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip()).rstrip(".")


class Seconds(click.FloatRange):
    """A duration: a finite number within the range (nan passes every comparison, inf
    would wait forever)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not math.isfinite(_float_or(value)):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return super().convert(value, param, ctx)


def _float_or(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0  # click's own message says it is not a number


class Digits(click.IntRange):
    """A count, index or VLAN id: ASCII digits 0-9 only (int() also takes '٣' and ' 3_0'),
    within the one range the field has in every command."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            self.fail(f"{value!r} is not a number written with the digits 0-9", param, ctx)
        return super().convert(value, param, ctx)


class Context:
    """What every command needs, built lazily so a parse error touches nothing."""

    def __init__(self, sysfs_root: str, state_dir: str | None, lock_timeout: float,
                 connect: str | None, config_dir: str | None = None) -> None:
        self.config_dir_option = config_dir
        self.sysfs_root = sysfs_root
        self.state_dir = state_dir
        self.lock_timeout = lock_timeout
        self.connect = connect
        self._machine: Machine | None = None
        self._namer = None
        self._holdings: Any = False  # not asked yet
        self.holdings_problem: str | None = None

    @property
    def config_dir(self) -> str:
        from pcimgr.persist import definitions
        return definitions.config_dir(self.machine, self.config_dir_option)

    @property
    def state(self) -> str:
        """The state directory, refused when it overlaps the configuration directory
        (apply would take the definitions for its own files, and the other way round)."""
        from pcimgr.drivers import planner as drivers
        state = drivers.state_dir(self.machine, self.state_dir)
        cfg = self.config_dir
        real_state, real_cfg = os.path.realpath(state), os.path.realpath(cfg)
        if os.path.commonpath([real_state, real_cfg]) in (real_state, real_cfg):
            raise BadInput(f"--state-dir {state} and --config-dir {cfg} overlap; give them "
                           "separate directories (defaults: /var/lib/pcimgr, /etc/pcimgr)")
        return state

    @property
    def asked_uri(self) -> str | None:
        """The libvirt URI to ask, or None where the machine does not ask libvirt unless
        told which one (a simulated host: the host's own libvirtd knows nothing of it)."""
        if not (self.machine.asks_libvirt_by_default or self.connect
                or os.environ.get("LIBVIRT_DEFAULT_URI")):
            return None
        return self.uri

    @property
    def uri(self) -> str:
        from pcimgr.host import libvirt_adapter
        return libvirt_adapter.default_uri(self.connect)

    def libvirt(self):  # type: ignore[no-untyped-def]
        """The connection changes go through. On a simulated host only when told which
        (--connect or LIBVIRT_DEFAULT_URI): qemu:///system has the real host's guests."""
        if self.asked_uri is None:
            raise BadInput(f"{self.sysfs.root} is a simulated host, whose functions no guest "
                           "of this machine's libvirt has; give --connect URI (e.g. "
                           "test:///default) to use a libvirt with it")
        from pcimgr.host import libvirt_adapter
        return libvirt_adapter.connect(self.uri)

    def holdings(self):  # type: ignore[no-untyped-def]
        """Which domains hold which functions, or None when libvirt cannot be asked.

        See asked_uri for when libvirt is not asked at all.
        """
        if self._holdings is False:
            self._holdings = None
            if self.asked_uri is not None:
                from pcimgr.guests import holdings as guests
                try:
                    self._holdings = guests.scan(self.libvirt())
                except PcimgrError as e:
                    self.holdings_problem = f"(guests unknown: {e})"
        return self._holdings

    def holdings_or_fail(self):  # type: ignore[no-untyped-def]
        """For changes: every domain's devices, or the error that prevented reading them."""
        from pcimgr.guests import holdings as guests
        if self._holdings is False or self._holdings is None:
            self._holdings = guests.scan(self.libvirt())
        return self._holdings

    def holders(self, address: PciAddress) -> list[str] | None:
        holdings = self.holdings()
        if holdings is None:
            return None  # and no import of the libvirt side at all
        from pcimgr.guests import holdings as guests
        return guests.names(holdings, address)

    @property
    def machine(self) -> Machine:
        """The host pcimgr works on, chosen once: the simulated host when --sysfs-root is
        one (its marker says so), else the Linux host whose sysfs is at that root."""
        if self._machine is None:
            from pcimgr.sim import marker
            root = os.path.abspath(self.sysfs_root)
            machine: Machine
            if root != "/sys" and marker.is_simulated(root):
                from pcimgr.sim.machine import SimulatedMachine
                machine = SimulatedMachine(root)
            else:
                from pcimgr.host.linux import LinuxMachine
                machine = LinuxMachine(root)
            if not os.path.isdir(machine.sysfs.path("bus/pci/devices")):
                raise NotFound(f"no PCI sysfs tree at {root} (no bus/pci/devices); give "
                               "--sysfs-root a directory laid out like /sys, e.g. one made by "
                               "`pcimgr sim create DIR`")
            self._machine = machine
        return self._machine

    @property
    def sysfs(self) -> Sysfs:
        return self.machine.sysfs

    def host(self):  # type: ignore[no-untyped-def]
        from pcimgr.host import discovery
        return discovery.scan(self.sysfs)

    @property
    def namer(self):  # type: ignore[no-untyped-def]
        if self._namer is None:
            from pcimgr.host.names import Namer
            self._namer = Namer()
        return self._namer


def address_arg(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(PciAddress.parse(v) for v in value)
    return PciAddress.parse(value)


def emit_json(data: Any) -> None:
    # Indented for a person at a terminal; compact for pipes, where json's C
    # encoder (indent=None only) is ten times faster on thousands of functions.
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/json.md).")


# Which module of pcimgr/commands/ defines each command: only the one a run needs is
# imported (every import is felt on a slow host, ~15x in the emulated lab).
COMMAND_MODULES = {
    **dict.fromkeys(("list", "show", "groups", "xml"), "read"),
    **dict.fromkeys(("detach", "rebind", "bind", "unbind"), "drivers"),
    "vfs": "vfs",
    **dict.fromkeys(("assign", "release"), "guests"),
    **dict.fromkeys(("define", "undefine", "apply", "status", "install-udev"), "persist"),
    **dict.fromkeys(("doctor", "advise"), "host"),
    **dict.fromkeys(("sim", "demo"), "sim"),
    "recover": "recover",
    "export": "export",
}


class _Group(click.Group):
    """Loads commands on demand, and turns pcimgr's expected errors into one line and
    their exit code, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMAND_MODULES and name not in self.commands:
            importlib.import_module(f"pcimgr.cli.commands.{COMMAND_MODULES[name]}")  # registers
        return super().get_command(ctx, name)

    def main(self, args: Any = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        """click's own handling but for the messages: a usage error is one line, as every
        other error is (click prints usage, a hint and the error on three or four)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "pcimgr"
            click.echo(f"pcimgr: {_one_line(e.format_message())}; see {where} --help", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"pcimgr: {_one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:  # Ctrl-C before pcimgr's own handlers were installed
            click.echo("pcimgr: interrupted; nothing was changed", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PermissionError as e:
            where = e.filename or "a file pcimgr needs"
            click.echo(f"pcimgr: permission denied on {where} ({e.strerror}); run as root "
                       "(sudo) or as the owner of that path", err=True)
            ctx.exit(NeedsRoot.exit_code)
        except PcimgrError as e:
            if _verbose:
                import traceback
                traceback.print_exc()
            click.echo(f"pcimgr: {e}", err=True)
            ctx.exit(e.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort, BrokenPipeError):
            raise
        except Exception as e:  # noqa: BLE001 - last resort: one line, details with -v
            if _verbose:
                raise
            click.echo(f"pcimgr: internal error: {type(e).__name__}: {e} "
                       "(run with -v for details)", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--sysfs-root", envvar="PCIMGR_SYSFS_ROOT", default="/sys", show_default=True,
              metavar="PATH", help="Root of the sysfs tree (a simulated host's directory).")
@click.option("--state-dir", envvar="PCIMGR_STATE_DIR", metavar="PATH",
              help="Journal, lock and original-driver records [default: /var/lib/pcimgr, "
                   "or inside a simulated host].")
@click.option("--lock-timeout", envvar="PCIMGR_LOCK_TIMEOUT", type=Seconds(0, 3600),
              default=30.0, show_default=True, metavar="SECONDS",
              help="How long a change waits for another pcimgr to finish.")
@click.option("--config-dir", envvar="PCIMGR_CONFIG_DIR", metavar="PATH",
              help="Device definitions [default: /etc/pcimgr, or inside a simulated host].")
@click.option("-c", "--connect", metavar="URI",
              help="libvirt connection [env LIBVIRT_DEFAULT_URI; default qemu:///system].")
@click.option("-v", "--verbose", is_flag=True, help="Show details (tracebacks) on errors.")
@click.version_option(__version__, prog_name="pcimgr")
@click.pass_context
def cli(ctx: click.Context, sysfs_root: str, state_dir: str | None, lock_timeout: float,
        config_dir: str | None, connect: str | None, verbose: bool) -> None:
    """PCI passthrough and SR-IOV device manager for KVM/libvirt hosts."""
    global _verbose
    _verbose = verbose
    ctx.obj = Context(sysfs_root, state_dir, lock_timeout, connect, config_dir)


def mac_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from pcimgr.host import vfinfo
    return None if value is None else vfinfo.check_mac(value)


mac_option = click.option("--mac", callback=mac_arg, help="The MAC address the guest sees.")
vlan_option = click.option("--vlan", type=Digits(1, 4094),
                           help="VLAN tag (1-4094) applied by the PF to the VF's traffic.")


dry_run_option = click.option("--dry-run", is_flag=True,
                              help="Print the plan (the exact sysfs writes) and change nothing.")
force_option = click.option("--force", is_flag=True,
                            help="Go on although the host uses the function (network, storage).")


def print_plan(proposal: Any, state: str) -> None:
    """What --dry-run shows: the plan's writes and calls, and a pending recovery."""
    from pcimgr.plans import transaction
    if os.path.exists(transaction.journal_path(state)):
        click.echo("Note: an unfinished transaction would be rolled back first.")
    click.echo(f"Plan for `pcimgr {proposal.plan.command}` (--dry-run: nothing changed):")
    if proposal.module:
        click.echo(f"0. modprobe {proposal.module}")
    click.echo(proposal.plan.describe())


def change(obj: Context, addresses: tuple[PciAddress, ...], propose: Callable[..., Any],
            dry_run: bool, report: Callable[[Any], str] | None = None) -> None:
    """Validate, plan, then act under the lock with journal and rollback (docs/plans.md)."""
    from pcimgr.drivers import planner as drivers
    from pcimgr.host import discovery, usage
    sysfs = obj.sysfs
    state = obj.state
    if dry_run:
        proposal = propose(discovery.scan_related(sysfs, addresses), usage.survey(obj.machine),
                           state)
        print_plan(proposal, state)
        for note in proposal.notes:
            click.echo(f"({note})")
        return

    def work() -> None:
        proposal = propose(discovery.scan_related(sysfs, addresses), usage.survey(obj.machine),
                           state)
        for note in proposal.notes:
            click.echo(note)
        if not proposal.plan.steps:
            click.echo("Nothing to do.")
            return
        drivers.execute(obj.machine, state, proposal, progress())
        if report is not None:
            click.echo(report(proposal))
            return
        from pcimgr.cli import render
        moved = tuple(PciAddress.parse(s.address) for s in proposal.plan.steps)
        click.echo(render.moves(proposal.plan, discovery.scan_related(sysfs, moved)))

    run_locked(obj, state, work)


def run_locked(obj: Context, state: str, work: Callable[[], None]) -> None:
    """Act as root under the lock, after undoing (and saying so) what a killed run left."""
    from pcimgr.drivers import planner as drivers
    obj.machine.require_root("changing the host (writes to /sys)")

    def after_recovery(recovered: str | None) -> None:
        from pcimgr.core.errors import RolledBack
        from pcimgr.plans import transaction
        if recovered and transaction.INCOMPLETE in recovered:
            raise RolledBack(f"{recovered}; put those right before changing anything else")
        if recovered:
            click.echo(f"pcimgr: {recovered}", err=True)
        work()
    drivers.locked(obj.machine, state, obj.lock_timeout, after_recovery)


def run_locked_config(obj: Context, work: Callable[[], None]) -> None:
    """Change definitions (or install files) under the host's lock, which every changing
    command takes: concurrent defines of one PF would otherwise lose each other's VFs."""
    from pcimgr.plans import lock, statefile
    obj.machine.check_writable()
    obj.state  # noqa: B018 - refuses a state directory overlapping the definitions
    with lock.exclusive(obj.machine.lock_dir, obj.lock_timeout):
        statefile.sweep(obj.config_dir, ("", "devices", "udev"))
        work()


def progress() -> Callable[[int, int, Any], None] | None:
    """Step by step on a terminal (VFs appearing and binding take seconds); silent on pipes."""
    if not sys.stderr.isatty() or not sys.stdout.isatty():
        return None

    def show(done: int, total: int, step: Any) -> None:
        click.echo(f"  [{done}/{total}] {step.summary()}", err=True)
    return show


timeout_option = click.option(
    "--timeout", type=Seconds(0.1, 3600), default=30.0, show_default=True,
    metavar="SECONDS",
    help="How long to wait for the kernel or a guest (VFs appearing and binding, a VF in "
         "reset, a guest letting go of a device).")


def on_off(ctx: click.Context, param: click.Parameter, value: str | None) -> bool | None:
    return None if value is None else value == "on"


def main(argv: list[str] | None = None) -> None:
    try:
        from pcimgr.plans import interrupts
        interrupts.install()  # SIGINT/SIGTERM: a failure that rolls back (not in tests' cli)
        cli.main(args=argv, prog_name="pcimgr")
    except KeyboardInterrupt:  # before the handlers were installed
        click.echo("pcimgr: interrupted; nothing was changed", err=True)
        sys.exit(130)
    except Interrupted as e:  # before a command ran
        click.echo(f"pcimgr: {e}; nothing was changed", err=True)
        sys.exit(e.exit_code)
    except BrokenPipeError:
        # `pcimgr list | head` is not an error; keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
