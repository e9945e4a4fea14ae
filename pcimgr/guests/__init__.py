"""Guests through libvirt: holdings, attach/detach steps, assign/release."""
