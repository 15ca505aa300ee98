"""fedmm: federated multimodal (image + text) learning when modalities are missing."""
__version__ = "0.1.0"
