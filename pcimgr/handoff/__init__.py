"""Per-guest hand-off through a libvirt hook: profiles, the preflight, the steps that take
devices (and what the host gives up for them) when a guest starts and give them back when
it stops. No call into libvirt: the hook runs while libvirtd waits for it."""
