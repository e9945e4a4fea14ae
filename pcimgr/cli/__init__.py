"""The command line: the group, shared options, rendering, the commands."""
