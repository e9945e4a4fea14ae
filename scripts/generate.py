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


# click's bash script, with the word being completed taken from the line itself: bash
# splits `04:00.0` at the `:` (COMP_WORDBREAKS), so click's script saw `04` and `:` and
# offered nothing; and bash replaces only what follows the word's last `:`.
BASH = r"""_pcimgr_completion() {
    local IFS=$'\n'
    local response line cur
    local -a words
    line=${COMP_LINE:0:$COMP_POINT}
    IFS=$' \t' read -r -a words <<< "$line"
    [[ $line == *[[:space:]] || ${#words[@]} -eq 0 ]] && words+=("")
    cur=${words[${#words[@]}-1]}
    IFS=$'\n'

    response=$(env COMP_WORDS="${words[*]}" COMP_CWORD=$(( ${#words[@]} - 1 )) \
        _PCIMGR_COMPLETE=bash_complete $1)

    for completion in $response; do
        IFS=',' read type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=($value)
        fi
    done

    if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local prefix=${cur%"${cur##*:}"} i
        for i in "${!COMPREPLY[@]}"; do
            COMPREPLY[$i]=${COMPREPLY[$i]#"$prefix"}
        done
    fi
    return 0
}

_pcimgr_completion_setup() {
    complete -o nosort -F _pcimgr_completion pcimgr
}

_pcimgr_completion_setup;
"""


def completion(shell: str) -> str:
    """click's own script for the shell (bash: BASH, which is click's with the word under
    the cursor read whole); at Tab it runs `pcimgr` to ask what fits."""
    if shell == "bash":
        return BASH
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
