"""Definitions kept across reboots: define, apply, status, udev."""
