"""Shared pytest setup.

Without a CUDA device, Triton kernels can only run in the interpreter, which
must be selected before ``fedmm.kernels`` is first imported; set it here so the
CPU test run reaches the kernels. Dispatch ``auto`` still picks the PyTorch
path for CPU tensors.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def exact_fp32():
    """The fp32 tolerances of the kernel tests assume exact fp32 products (PyTorch's default
    matmul precision); a test may lower it, and it is restored afterwards."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(previous)
