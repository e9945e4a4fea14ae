"""Run pcimgr in a child that dies (os._exit(9)) right after a chosen write, like a kill -9."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import os, sys
from pcimgr.host.sysfs import Sysfs
real = Sysfs.write_attr
def write(self, rel, value):
    real(self, rel, value)
    if rel.endswith(sys.argv[1]):
        os._exit(9)
Sysfs.write_attr = write
from pcimgr.cli.app import main
main(sys.argv[2:])
"""


def run_killed_after(attribute: str, *argv: str) -> int:
    """pcimgr ARGV in a child killed after its first write to a path ending in `attribute`."""
    return subprocess.run([sys.executable, "-c", _SCRIPT, attribute, *argv]).returncode
