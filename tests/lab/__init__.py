"""The real-kernel lab: a Debian kernel in QEMU with an emulated IOMMU and Intel NICs."""
