"""`python -m pcimgr` and the `pcimgr` script. Ctrl-C while Python still imports the
program is one line too, not a KeyboardInterrupt traceback."""

import sys


def run() -> None:
    try:
        from pcimgr.cli.app import main
    except KeyboardInterrupt:
        sys.stderr.write("pcimgr: interrupted; nothing was changed\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
