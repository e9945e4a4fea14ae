"""Atomic JSON (or text) files in the state and configuration directories.

Temporary file, fsync, rename, directory fsync; never through a symlink.
"""

from __future__ import annotations

import json
import os
from typing import Any


def write(path: str, data: Any, readable: bool = True, mode: int = 0o600) -> None:
    """data as JSON, or a str written as it is; mode 0o644 for files others may read.

    readable=False: one line, by json's C encoder (the journal is rewritten at every
    step, and the indenting encoder is pure Python: seconds under the emulated lab)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700 if mode == 0o600 else 0o755, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        text = data if isinstance(data, str) else (
            json.dumps(data, indent=1, sort_keys=True) if readable else json.dumps(data))
        os.write(fd, (text.rstrip("\n") + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)  # the rename itself must survive a crash
    finally:
        os.close(dfd)


def read(path: str) -> Any | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as f:
        return json.load(f)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
