"""A simulated host: a directory laid out like /sys plus a kernel that reacts to writes.

Tests, the demo and rehearsals run the production sysfs layer against it.
"""
