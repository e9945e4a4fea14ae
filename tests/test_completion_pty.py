"""Tab in a real terminal: bash, zsh and fish run interactively in a pty with the shipped
completion scripts, and completing an address after its `:` (`05:0` Tab) gives the whole
address. bash splits a word at `:` (COMP_WORDBREAKS); click's own script then offered
nothing (issue 24)."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PCIMGR = Path(sys.executable).parent / "pcimgr"

SHELLS = {
    "bash": (["bash", "--norc", "--noprofile", "-i"],
             f"source {REPO / 'completion/pcimgr.bash'}"),
    "zsh": (["zsh", "-f", "-i"],
            f"fpath=({REPO / 'completion'} $fpath); autoload -U compinit; compinit -u"),
    "fish": (["fish", "--no-config", "-i"], f"source {REPO / 'completion/pcimgr.fish'}"),
}


def _read(fd: int, until: str, seconds: float) -> str:
    out, end = "", time.monotonic() + seconds
    while time.monotonic() < end and until not in out:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                out += os.read(fd, 4096).decode("utf-8", "replace")
            except OSError:
                break
    return out


@pytest.mark.parametrize("shell", SHELLS)
def test_tab_completes_an_address_after_its_colon(shell: str, demo_root: Path) -> None:
    if shutil.which(shell) is None:
        if os.environ.get("CI"):
            pytest.fail(f"no {shell}; scripts/run test installs it")
        pytest.skip(f"{shell} is not installed (scripts/run test installs it)")
    argv, setup = SHELLS[shell]
    env = {"PATH": f"{PCIMGR.parent}:{os.environ['PATH']}", "HOME": str(demo_root.parent),
           "TERM": "dumb", "PS1": "READY> ", "PROMPT": "READY> ", "LANG": "C.UTF-8",
           "PYTHONPATH": str(REPO)}
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the shell
        os.execvpe(argv[0], argv, env)
    try:
        os.write(fd, (setup + "\n").encode())
        if shell == "fish":
            os.write(fd, b"function fish_prompt; echo -n 'READY> '; end\n")
        _read(fd, "READY> ", 20)
        marker = "DONE-" + shell
        os.write(fd, f"pcimgr --sysfs-root {demo_root} show 05:0\t".encode())
        # the completion runs pcimgr: wait until the shell has redrawn the word (or not)
        seen = _read(fd, "show 05:00.0", 30)
        time.sleep(0.5)
        # then the line is run through echo (Ctrl-A, `echo MARKER `), to read it back
        os.write(fd, f"\x01echo {marker} \n".encode())
        out = seen + _read(fd, f"\n{marker} pcimgr", 30) + _read(fd, "READY> ", 10)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    printed = [line for line in out.replace("\r", "").splitlines()
               if line.startswith(f"{marker} pcimgr")]
    assert printed and printed[-1].rstrip() == (
        f"{marker} pcimgr --sysfs-root {demo_root} show 05:00.0"), out[-1500:]
