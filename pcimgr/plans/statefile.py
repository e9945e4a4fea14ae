"""pcimgr's own files (journal, records, definitions, udev env files): written atomically,
read through one loader that checks their shape, never through a symbolic link.

A file lives below a top directory (the state or configuration directory). The
top and every directory and file below it are opened relative to the directory
above with O_NOFOLLOW: a link anywhere from the top down is refused (Damaged,
one line), never followed. Above the top the path is the system's (/var/lib may
be a link on some hosts). Writes go to NAME.tmp.PID, fsync, rename, fsync of the
directory; a failed write removes its temporary file (also a signal right after its
open), and `sweep` removes those a killed process left (callers hold the lock, so no
other writer is running). Every OSError on these files (a full or failing disk, a
read-only filesystem, a directory where a file belongs) is one line naming the path and
the way out (Damaged; NeedsRoot for permission), never an internal error.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pcimgr.core.errors import Damaged, NeedsRoot

T = TypeVar("T")
MAX_SIZE = 1 << 20  # no file pcimgr writes comes near; a larger one is not ours
_TMP = re.compile(r"\.tmp\.[0-9]+$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def denied(path: str, what: str) -> NeedsRoot:
    return NeedsRoot(f"permission denied: {what} {path}; run as root (sudo) or as the owner of "
                     "that directory, or choose another --state-dir/--config-dir")


def not_followed(path: str) -> Damaged:
    kind = "a symbolic link" if os.path.islink(path) else "not a directory"
    return Damaged(f"{path} is {kind}; pcimgr never writes or reads its state through links: "
                   "replace it with a real directory (or give --state-dir/--config-dir a real "
                   "directory)")


def unusable(path: str, e: OSError) -> Damaged:
    """A full or failing disk, a read-only filesystem, a name taken by a directory: one
    line naming the path and the way out."""
    return Damaged(f"cannot use {path}: {e.strerror or e}; free space there, repair or "
                   "remount that filesystem, or remove what is in the way (or choose another "
                   "--state-dir/--config-dir), then retry")


@contextmanager
def failing(path: str) -> Iterator[None]:
    """OSErrors on pcimgr's own files as one line (Damaged, or NeedsRoot for permission)."""
    try:
        yield
    except PermissionError:
        raise denied(path, "no permission to use") from None
    except OSError as e:
        raise unusable(e.filename if isinstance(e.filename, str) and os.path.isabs(e.filename)
                       else path, e) from None


@contextmanager
def directory(top: str, rel: str = "", create: bool = False,
              mode: int = 0o700) -> Iterator[int | None]:
    """An fd of TOP/REL, each component from TOP down opened without following links;
    None when it does not exist (and create is False)."""
    top = os.path.abspath(top)
    parent, name = os.path.split(top)
    parts = ([name] if name else []) + [p for p in rel.split("/") if p]
    if create and parent:
        try:
            os.makedirs(parent, 0o755, exist_ok=True)
        except PermissionError:
            raise denied(parent, "no permission to create") from None
        except OSError as e:
            raise unusable(parent, e) from None
    try:
        fd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise
        fd = -1  # nothing below a missing parent
    except OSError as e:
        raise unusable(parent, e) from None
    if fd < 0:
        yield None
        return
    here, missing = parent or "/", False
    try:
        for part in parts:
            here = os.path.join(here, part)
            new = _enter(fd, part, here, create, mode)
            if new is None:
                missing = True
                break
            os.close(fd)
            fd = new
    except BaseException:
        os.close(fd)
        raise
    try:
        yield None if missing else fd
    finally:
        os.close(fd)


def _enter(fd: int, part: str, here: str, create: bool, mode: int) -> int | None:
    """The fd of directory PART below FD (HERE), made when create; None when absent."""
    doing = "enter"
    try:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                return None
        doing = "create"
        try:
            os.mkdir(part, mode, dir_fd=fd)
        except FileExistsError:
            pass  # made by someone else meanwhile: opened (and checked) below
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise not_followed(here) from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise denied(here, f"no permission to {doing}") from None
        raise unusable(here, e) from None


def write(path: str, data: Any, readable: bool = True, mode: int = 0o600,
          top: str | None = None) -> None:
    """data as JSON, or a str written as it is; mode 0o644 for files others may read.
    top: the state or configuration directory the file lives under (default: its directory).

    readable=False: one line, by json's C encoder (the journal is rewritten at every
    step, and the indenting encoder is pure Python: seconds under the emulated lab)."""
    top, rel_dir, name = _split(path, top)
    text = data if isinstance(data, str) else dumps(data, readable)
    payload = (text.rstrip("\n") + "\n").encode()
    tmp = f"{name}.tmp.{os.getpid()}"
    with failing(path), directory(top, rel_dir, create=True,
                                  mode=0o700 if mode == 0o600 else 0o755) as dfd:
        assert dfd is not None  # created
        try:  # from before the open: a signal just after it must not leave the file
            try:
                fd = _create(tmp, dfd, mode)
            except FileExistsError:  # left by a killed process that had our pid
                os.unlink(tmp, dir_fd=dfd)
                fd = _create(tmp, dfd, mode)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except PermissionError:
            _unlink(tmp, dfd)
            raise denied(os.path.join(top, rel_dir), "no permission to write in") from None
        except BaseException:
            _unlink(tmp, dfd)  # a full disk or a signal leaves no temporary file behind
            raise
        os.fsync(dfd)  # the rename itself must survive a crash


def untrusted(top: str, name: str) -> str:
    """Why TOP/NAME, a file only pcimgr writes (mode 0600), cannot be trusted; "" when it
    can or is absent (or out of reach: its reader says so). One someone else could have
    written is a script for root."""
    with directory(top) as dfd:
        if dfd is None:
            return ""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dfd)
        except (FileNotFoundError, PermissionError):
            return ""
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise unusable(os.path.join(top, name), e) from None  # a failing disk
            return "it is a symbolic link"
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    if info.st_uid not in (0, os.geteuid()):
        return f"it belongs to uid {info.st_uid}, not root or uid {os.geteuid()}"
    if info.st_mode & 0o077:
        return (f"its mode is {stat.S_IMODE(info.st_mode):04o}, not 0600 (others may write "
                "or read it)")
    return ""


def _create(name: str, dfd: int, mode: int) -> int:
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   mode, dir_fd=dfd)


def dumps(data: Any, readable: bool = True) -> str:
    """JSON as pcimgr writes it: indented and sorted for people, or one line."""
    return json.dumps(data, indent=1, sort_keys=True) if readable else json.dumps(data)


def load(path: str, shape: Callable[[Any], T], fix: str, top: str | None = None) -> T | None:
    """The file's JSON checked by shape (which raises ValueError, TypeError or KeyError
    naming what is wrong); None when the file is absent; Damaged naming the file and fix."""
    text = read_text(path, fix, top)
    return None if text is None else parse(path, text, shape, fix)


def parse(path: str, text: str, shape: Callable[[Any], T], fix: str) -> T:
    """load's check of a file's text (read already)."""
    try:
        return shape(json.loads(text))
    except json.JSONDecodeError as e:
        why = f"not valid JSON ({e.msg}: line {e.lineno} column {e.colno})"
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        why = str(e) if not isinstance(e, KeyError) else f"no {e}"
    raise Damaged(f"damaged state file {path}: {why}; {fix}")


def read_text(path: str, fix: str, top: str | None = None) -> str | None:
    """The file's text; None when absent; Damaged if it is a link, not a regular file,
    too large or not UTF-8."""
    top, rel_dir, name = _split(path, top)
    with failing(path), directory(top, rel_dir) as dfd:
        if dfd is None:
            return None
        try:
            # O_NONBLOCK: a FIFO put there must not hang us; harmless on a regular file
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dfd)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise denied(path, "no permission to read") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Damaged(f"damaged state file {path}: a symbolic link, which pcimgr never "
                              f"follows; {fix}") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise Damaged(f"damaged state file {path}: not a regular file; {fix}")
            if info.st_size > MAX_SIZE:
                raise Damaged(f"damaged state file {path}: {info.st_size} bytes, far more than "
                              f"pcimgr writes; {fix}")
            raw = os.read(fd, MAX_SIZE + 1)
        finally:
            os.close(fd)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise Damaged(f"damaged state file {path}: not UTF-8 text; {fix}") from None


def remove(path: str, top: str | None = None) -> None:
    """Remove the file if it is there (a link is removed, not followed)."""
    top, rel_dir, name = _split(path, top)
    with failing(path), directory(top, rel_dir) as dfd:
        if dfd is not None:
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                pass
            except PermissionError:
                raise denied(path, "no permission to remove") from None


def names(top: str, rel: str = "") -> list[str]:
    """The entries of TOP/REL, sorted; [] when it does not exist."""
    with failing(os.path.join(top, rel)), directory(top, rel) as dfd:
        return [] if dfd is None else sorted(os.listdir(dfd))


def sweep(top: str, rels: tuple[str, ...] = ("",)) -> None:
    """Remove temporary files left by killed writers in TOP and TOP/REL (under the lock)."""
    for rel in rels:
        with directory(top, rel) as dfd:
            if dfd is None:
                continue
            for name in os.listdir(dfd):
                if _TMP.search(name):
                    _unlink(name, dfd)


def sweep_tree(top: str) -> None:
    """sweep TOP and each directory in it (the configuration: devices, udev, pools)."""
    with directory(top) as dfd:
        subdirs = [] if dfd is None else [
            n for n in os.listdir(dfd)
            if stat.S_ISDIR(os.stat(n, dir_fd=dfd, follow_symlinks=False).st_mode)]
    sweep(top, ("", *subdirs))


def _unlink(name: str, dfd: int) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


def _split(path: str, top: str | None) -> tuple[str, str, str]:
    """(top, directory below top, file name) of an absolute or relative path."""
    path = os.path.abspath(path)
    top = os.path.abspath(top) if top is not None else os.path.dirname(path)
    rel = os.path.relpath(path, top)
    if rel.startswith("..") or rel == ".":
        raise ValueError(f"{path} is not below {top}")
    rel_dir, name = os.path.split(rel)
    return top, rel_dir, name


# -- shapes: small checks a loader's shape function is built from -------------------

def obj(data: Any, **fields: Any) -> dict[str, Any]:
    """data as a JSON object whose named fields have the given types (a tuple: any of them)."""
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__} where an object belongs")
    for key, types in fields.items():
        if key not in data:
            raise ValueError(f"no {key!r} field")
        value = data[key]
        allowed = types if isinstance(types, tuple) else (types,)
        # JSON true/false are Python ints: accept them only where a bool is wanted
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ValueError(f"{key!r} is {json.dumps(value)[:40]}, not "
                             + " or ".join("null" if t is type(None) else t.__name__
                                           for t in allowed))
    return data
