"""SR-IOV virtual functions: list, create, destroy, set."""
