"""fedmm.data."""
