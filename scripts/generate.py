"""Write the files generated from the click commands: the man page and the shell
completions. tests/test_packaging.py keeps the committed copies equal to this output.

    .venv/bin/python scripts/generate.py        # rewrite them after changing a command
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# where each shell looks for a package's completion (the Debian package installs them there)
COMPLETIONS = {"bash": "completion/pcimgr.bash", "zsh": "completion/_pcimgr",
               "fish": "completion/pcimgr.fish"}


def completion(shell: str) -> str:
    """click's own script for the shell; at Tab it runs `pcimgr` to ask what fits."""
    from click.shell_completion import get_completion_class

    from pcimgr.cli.app import cli
    found = get_completion_class(shell)
    assert found is not None, shell
    return found(cli, {}, "pcimgr", "_PCIMGR_COMPLETE").source()


def expected() -> dict[str, str]:
    sys.path.insert(0, str(REPO / "scripts"))
    import manpage
    files = {"man/pcimgr.8": manpage.page()}
    files.update({rel: completion(shell) for shell, rel in COMPLETIONS.items()})
    return files


if __name__ == "__main__":
    for rel, text in expected().items():
        path = REPO / rel
        os.makedirs(path.parent, exist_ok=True)
        path.write_text(text)
        print(f"wrote {rel}")
