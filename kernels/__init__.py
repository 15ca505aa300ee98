"""Triton kernels (installed as ``fedmm.kernels``)."""
