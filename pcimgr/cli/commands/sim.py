"""Simulated hosts and the demo."""

from __future__ import annotations

import os

import click

from pcimgr.cli.options import PROFILE, emit_json, json_option


@click.group()
def sim() -> None:
    """Simulated hosts: a directory laid out like /sys with a kernel that reacts to writes."""


@sim.command("create")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--profile", type=PROFILE, default="demo", show_default=True,
              help="demo, lab, or scale:PFSxVFS (e.g. scale:256x15).")
@click.option("--no-iommu", is_flag=True, help="A host booted without intel_iommu=on.")
def sim_create(directory: str, profile: str, no_iommu: bool) -> None:
    """Write a simulated host; use it with `pcimgr --sysfs-root DIRECTORY ...`."""
    from pcimgr.core.errors import BadInput, NeedsRoot
    from pcimgr.sim import builder, profiles
    if not profile.isascii():  # scale:PFSxVFS counts are ASCII digits, as everywhere
        raise BadInput(f"not a profile name: {profile!r}; `pcimgr sim profiles` lists them")
    spec = profiles.get(profile)
    if os.path.isdir(directory) and os.stat(directory).st_uid != os.geteuid():
        raise BadInput(f"{directory} belongs to uid {os.stat(directory).st_uid}; a simulated "
                       "host must be yours: choose a new path")
    umask = os.umask(0o022)  # pcimgr trusts no simulated host others may write
    try:
        builder.build(directory, spec, iommu=False if no_iommu else None)
        os.chmod(directory, 0o755)  # an existing empty directory keeps its mode otherwise
    except OSError as e:
        where = _short(e.filename or directory)
        if isinstance(e, PermissionError):
            raise NeedsRoot(f"permission denied: cannot create {where}; choose a directory you "
                            "may write to") from None
        raise BadInput(f"cannot make a simulated host at {where}: {e.strerror}; choose a new "
                       "path in a writable filesystem (e.g. /dev/shm/host or /tmp/host)") from None
    finally:
        os.umask(umask)
    click.echo(f"Simulated host '{spec.name}' written to {os.path.abspath(directory)}")
    click.echo(f"Use it with: pcimgr --sysfs-root {os.path.abspath(directory)} list")


def _short(path: str) -> str:
    return path if len(path) <= 80 else f"{path[:60]}...({len(path)} characters)"


@sim.command("profiles")
@json_option
def sim_profiles(as_json: bool) -> None:
    """The built-in host profiles."""
    from pcimgr.sim import profiles
    entries = [{"name": name, "description": make().description}
               for name, make in profiles.PROFILES.items()]
    entries.append({"name": "scale:PFSxVFS",
                    "description": "PFS igb-like PFs with VFS VFs each, for benchmarks"})
    if as_json:
        emit_json(entries)
        return
    for e in entries:
        click.echo(f"{e['name']:8} {e['description']}")


@click.command()
@click.option("--keep", type=click.Path(file_okay=False),
              help="Build the simulated host here and keep it afterwards.")
def demo(keep: str | None) -> None:
    """A guided tour on a simulated host: no root, no hardware, no libvirtd."""
    from pcimgr.cli import demo as demo_mod
    pcimgr = click.get_current_context().find_root().command  # the group that ran us
    demo_mod.run(keep, lambda args: pcimgr.main(args=args, prog_name="pcimgr",
                                                standalone_mode=False))
