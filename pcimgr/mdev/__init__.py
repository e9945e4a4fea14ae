"""Mediated devices: their lifecycle, their definitions in mdevctl's format (docs/mdev.md)."""
