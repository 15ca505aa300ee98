"""fedmm.federated."""
