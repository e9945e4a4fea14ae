"""Advice about the host: doctor's checks, network modes."""
