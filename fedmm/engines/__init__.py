"""fedmm.engines."""
