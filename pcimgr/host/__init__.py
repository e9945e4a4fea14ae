"""What pcimgr asks of the machine: sysfs, discovery, uevents, netlink, the host's own use
of its devices, PCI names, libvirt."""
