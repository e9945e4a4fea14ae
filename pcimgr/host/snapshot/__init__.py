"""Snapshots: everything pcimgr reads of a host, in one archive, read back anywhere as that
host (read commands only). take.py writes one, unpack.py opens one safely, machine.py is the
seam's snapshot machine; docs/snapshots.md is the format."""
