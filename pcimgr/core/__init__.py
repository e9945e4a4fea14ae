"""Pure values and rules: addresses, the frozen model, VFIO viability, hostdev XML, errors.
No I/O."""
