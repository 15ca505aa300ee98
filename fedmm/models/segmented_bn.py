"""BatchNorm that normalises segments of a batch by their own statistics (one network call).

A client's training step runs the image encoder on its training batch and, for
representation KD, on a few public rows. At these sizes (16 + 8 rows of 64 x 64) the
encoder's cost is mostly per call, not per row, so one call over both is much cheaper
than two (benchmarks/README.md, "Encoders per training step"). Joining them must not
change what BatchNorm computes: in training mode each segment is normalised by its own
batch statistics, and the running statistics are updated once per segment, in order,
exactly as two separate calls would. Convolutions and activations act per row, so the
joint call equals the separate ones up to float rounding
(``tests/models/test_segmented_bn.py`` checks this in float64).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn


class SegmentedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and state-dict names) that, in training
    mode with ``segments`` set, applies itself to each segment of the batch in turn."""

    segments: tuple[int, ...] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # x [B, C, H, W]
        if self.segments is None or not self.training or len(self.segments) < 2:
            return super().forward(x)
        return torch.cat([super(SegmentedBatchNorm2d, self).forward(part) for part in x.split(self.segments)])


def use_segmented_bn(module: nn.Module) -> None:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a :class:`SegmentedBatchNorm2d`
    with the same settings and state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            like = next(iter(child.parameters()), None)
            like = like if like is not None else child.running_mean
            seg = SegmentedBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats, device=like.device, dtype=like.dtype)
            seg.load_state_dict(child.state_dict())
            setattr(module, name, seg)
        else:
            use_segmented_bn(child)


@contextlib.contextmanager
def batch_segments(module: nn.Module, sizes: Sequence[int]) -> Iterator[None]:
    """Within the block, every :class:`SegmentedBatchNorm2d` of ``module`` treats its input as
    consecutive segments of ``sizes`` rows (empty segments are left out)."""
    layers = [m for m in module.modules() if isinstance(m, SegmentedBatchNorm2d)]
    sizes = tuple(int(s) for s in sizes if int(s) > 0)
    for m in layers:
        m.segments = sizes
    try:
        yield
    finally:
        for m in layers:
            m.segments = None
