"""The CLI's commands, one module per subject; pcimgr.cli imports them all."""
