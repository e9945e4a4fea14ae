"""Command line: the `pcimgr` group, its global options, the lazy command table and the
error mapping. What commands share is in context.py, options.py and runner.py; the
commands are in cli/commands/, one module per subject, and never import this module."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from pcimgr import __version__
from pcimgr.cli import context, options
from pcimgr.core.errors import Interrupted, NeedsRoot, PcimgrError
from pcimgr.core.terminal import safe

_verbose = False


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip()).rstrip(".")


# Where each command is defined, as "module:attr": a run imports only the module it needs
# (every import is felt on a slow host, ~15x in the emulated lab).
COMMANDS = {
    "list": "read:list_cmd", "show": "read:show", "groups": "read:groups", "xml": "read:xml",
    "detach": "drivers:detach", "rebind": "drivers:rebind", "bind": "drivers:bind",
    "unbind": "drivers:unbind",
    "vfs": "vfs:vfs", "mdev": "mdev:mdev", "vgpu": "vgpu:vgpu",
    "assign": "guests:assign", "release": "guests:release",
    "migrate-prep": "guests:migrate_prep", "migrate-finish": "guests:migrate_finish",
    "pool": "pool:pool",
    "define": "persist:define", "undefine": "persist:undefine", "apply": "persist:apply",
    "status": "persist:status", "install-udev": "persist:install_udev",
    "doctor": "host:doctor", "advise": "host:advise", "tree": "insight:tree",
    "reset": "reset:reset",
    "sim": "sim:sim", "demo": "sim:demo",
    "recover": "recover:recover", "history": "history:history",
    "export": "export:export", "snapshot": "snapshot:snapshot",
    "handoff": "handoff:handoff", "hook": "handoff:hook",
}


# the names virsh gives the same thing (`virsh nodedev-reattach`)
ALIASES = {"reattach": "rebind"}


def load_command(name: str) -> click.Command:
    module, attr = COMMANDS[ALIASES.get(name, name)].split(":")
    command: click.Command = getattr(importlib.import_module(f"pcimgr.cli.commands.{module}"),
                                     attr)
    return command


_GLOBAL_VALUES = frozenset({"--sysfs-root", "--snapshot", "--state-dir", "--lock-timeout",
                            "--config-dir", "-c", "--connect"})
_GLOBAL_FLAGS = frozenset({"-v", "--verbose"})


def globals_first(args: list[str]) -> list[str]:
    """`pcimgr list --sysfs-root DIR` as `pcimgr --sysfs-root DIR list`: the global options
    are taken wherever they stand, as virsh and git users expect (no command has options of
    these names; `--` ends the search)."""
    at = 0
    while at < len(args) and args[at].startswith("-"):  # the options before the command
        at += 2 if args[at] in _GLOBAL_VALUES else 1
    if at >= len(args):
        return args
    moved: list[str] = []
    kept: list[str] = []
    rest = args[at + 1:]
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "--":
            kept += rest[i:]
            break
        if word in _GLOBAL_VALUES and i + 1 < len(rest):
            moved += rest[i:i + 2]
            i += 2
            continue
        if word in _GLOBAL_FLAGS or word.split("=", 1)[0] in _GLOBAL_VALUES:
            moved.append(word)
        else:
            kept.append(word)
        i += 1
    return args[:at] + moved + [args[at]] + kept


class _Group(click.Group):
    """Loads commands on demand, and turns pcimgr's expected errors into one line and
    their exit code, never a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, globals_first(args))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)  # aliases work without crowding the help

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if (name in COMMANDS or name in ALIASES) and name not in self.commands:
            self.add_command(load_command(name), name)
        return super().get_command(ctx, name)

    def main(self, args: Any = None, prog_name: str | None = None,
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
            click.echo(safe(f"pcimgr: {_one_line(e.format_message())}; see {where} --help"),
                       err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(safe(f"pcimgr: {_one_line(e.format_message())}"), err=True)
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
            click.echo(safe(f"pcimgr: permission denied on {where} ({e.strerror}); run as "
                            "root (sudo) or as the owner of that path"), err=True)
            ctx.exit(NeedsRoot.exit_code)
        except PcimgrError as e:
            if _verbose:
                import traceback
                traceback.print_exc()
            click.echo(safe(f"pcimgr: {e}"), err=True)
            ctx.exit(e.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort, BrokenPipeError):
            raise
        except Exception as e:  # noqa: BLE001 - last resort: one line, details with -v
            if _verbose:
                raise
            click.echo(safe(f"pcimgr: internal error: {type(e).__name__}: {e} "
                            "(run with -v for details)"), err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--sysfs-root", envvar="PCIMGR_SYSFS_ROOT", default="/sys", show_default=True,
              metavar="PATH", help="Root of the sysfs tree: a simulated host's directory, an "
                                   "unpacked snapshot, or another tree (read only).")
@click.option("--snapshot", envvar="PCIMGR_SNAPSHOT", metavar="FILE",
              help="Read the host a `pcimgr snapshot` recorded, not this one (read commands "
                   "only).")
@click.option("--state-dir", envvar="PCIMGR_STATE_DIR", metavar="PATH",
              help="Journal, lock and original-driver records [default: /var/lib/pcimgr, "
                   "or inside a simulated host].")
@click.option("--lock-timeout", envvar="PCIMGR_LOCK_TIMEOUT", type=options.Seconds(0, 3600),
              default=30.0, show_default=True, metavar="SECONDS",
              help="How long a change waits for another pcimgr to finish.")
@click.option("--config-dir", envvar="PCIMGR_CONFIG_DIR", metavar="PATH",
              help="Device definitions [default: /etc/pcimgr, or inside a simulated host].")
@click.option("-c", "--connect", metavar="URI",
              help="libvirt connection [env LIBVIRT_DEFAULT_URI; default qemu:///system].")
@click.option("-v", "--verbose", is_flag=True,
              help="Print each sysfs write and libvirt change as it happens, and the "
                   "traceback of an internal error.")
@click.version_option(__version__, prog_name="pcimgr")
@click.pass_context
def cli(ctx: click.Context, sysfs_root: str, snapshot: str | None, state_dir: str | None,
        lock_timeout: float, config_dir: str | None, connect: str | None,
        verbose: bool) -> None:
    """PCI passthrough and SR-IOV device manager for KVM/libvirt hosts."""
    global _verbose
    _verbose = verbose
    if os.environ.get("NO_COLOR"):  # https://no-color.org: any value turns colour off
        ctx.color = False
    ctx.obj = context.Context(sysfs_root, state_dir, lock_timeout, connect, config_dir,
                              verbose, snapshot)


def main(argv: list[str] | None = None) -> None:
    try:
        from pcimgr.plans import interrupts
        interrupts.install()  # SIGINT/SIGTERM: a failure that rolls back (not in tests' cli)
        cli.main(args=argv, prog_name="pcimgr")
    except KeyboardInterrupt:  # before the handlers were installed
        click.echo("pcimgr: interrupted; nothing was changed", err=True)
        sys.exit(130)
    except Interrupted as e:  # before a command ran
        click.echo(safe(f"pcimgr: {e}; nothing was changed"), err=True)
        sys.exit(e.exit_code)
    except BrokenPipeError:
        # `pcimgr list | head` is not an error; keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
