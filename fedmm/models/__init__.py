"""fedmm.models."""
