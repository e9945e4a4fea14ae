"""The CLI's commands, one module per subject; pcimgr.cli.app imports them all."""
