"""pcimgr: PCI passthrough and SR-IOV device manager for KVM/libvirt hosts."""

__version__ = "0.1.0"
