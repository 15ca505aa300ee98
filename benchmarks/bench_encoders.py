"""Milliseconds per training step of each encoder on one CPU thread (a client worker's setting).

    python benchmarks/bench_encoders.py                 # batch 16, text length 48 (the defaults)
    python benchmarks/bench_encoders.py --batch 24 --repeat 20

Forward + backward of the image encoder (MobileNetV3-small on 64x64 grayscale, as the model
builds it: channels_last with the small-map depthwise weight gradient of
``fedmm/models/depthwise.py``; beside it the same network with the library's depthwise
gradient, ``ImageEncoder(fast_depthwise=False)``, and that one in the contiguous layout; the
training batch and representation KD's ``--extra`` public rows in two calls against one joint call,
as ``FedMMModel.forward(..., extra=...)`` makes it) and of the text encoder (BERT-tiny at ``--length`` tokens), and one AdamW step over the whole client
model (fused, as ``make_optimizer`` builds it, against torch's for-loop AdamW); random init,
median of ``--repeat`` steps after warm-up, all measured in one run so the ratios are
comparable on a shared machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

from fedmm.config import TrainConfig
from fedmm.federated.train import make_optimizer
from fedmm.models.encoders import ImageEncoder, TextEncoder
from fedmm.models.model import FedMMModel, ModelConfig


def median_ms(step, repeat: int) -> float:
    """Median wall time of ``step()`` in milliseconds over ``repeat`` calls, after two warm-up calls."""
    for _ in range(2):
        step()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def paired_median_ms(first, second, repeat: int) -> tuple[float, float]:
    """Median wall times (ms) of two steps timed alternately, so drift of a shared machine hits both."""
    for _ in range(2):
        first(), second()
    times = ([], [])
    for _ in range(repeat):
        for step, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            step()
            out.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1])


class Contiguous(nn.Module):
    """The image encoder's network fed in the default (NCHW contiguous) memory layout."""

    def __init__(self, enc: ImageEncoder) -> None:
        super().__init__()
        self.enc = enc
        enc.features = enc.features.to(memory_format=torch.contiguous_format)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div(255.0).expand(-1, 3, -1, -1)             # [B, 3, S, S]
        x = ((x - self.enc.mean) / self.enc.std).contiguous()
        return self.enc.features(x).flatten(2).transpose(1, 2)          # [B, h*w, C]


def main() -> None:
    """Print one line of step times per repeat of the five measurements."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2, help="times the measurements are repeated")
    ap.add_argument("--extra", type=int, default=8, help="public rows representation KD adds to a step")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 1, 64, 64), dtype=torch.uint8)   # [B, 1, 64, 64]
    extra = torch.randint(0, 256, (args.extra, 1, 64, 64), dtype=torch.uint8)      # [E, 1, 64, 64]
    joint = torch.cat([images, extra])                                             # [B + E, 1, 64, 64]
    ids = torch.randint(0, args.vocab, (args.batch, args.length))                  # [B, L]
    mask = torch.ones(args.batch, args.length, dtype=torch.long)
    image_fast, image_cl = ImageEncoder(), ImageEncoder(fast_depthwise=False)
    image_nchw = Contiguous(ImageEncoder(fast_depthwise=False))
    text = TextEncoder(vocab_size=args.vocab, max_len=args.length)
    model = FedMMModel(ModelConfig(), args.vocab, 8, args.length)                  # the whole client model
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    adamw_fused = make_optimizer(model, TrainConfig(), "cpu")
    adamw_loop = torch.optim.AdamW(params, lr=1e-6, foreach=False, fused=False)
    for _ in range(args.rounds):
        fast = median_ms(lambda: image_fast(images).sum().backward(), args.repeat)
        cl = median_ms(lambda: image_cl(images).sum().backward(), args.repeat)
        nchw = median_ms(lambda: image_nchw(images).sum().backward(), args.repeat)
        txt = median_ms(lambda: text(ids, mask).sum().backward(), args.repeat)
        apart, together = paired_median_ms(lambda: (image_fast(images).sum() + image_fast(extra).sum()).backward(),
                                           lambda: image_fast(joint, segments=(len(images), len(extra))).sum().backward(),
                                           args.repeat)
        fused = median_ms(adamw_fused.step, args.repeat)
        loop = median_ms(adamw_loop.step, args.repeat)
        print(f"image encoder as built {fast:.1f} ms | library depthwise gradient {cl:.1f} ms ({cl / fast:.2f}x) | "
              f"that, contiguous {nchw:.1f} ms | batch + {args.extra} public rows: two calls {apart:.1f} ms, "
              f"one call {together:.1f} ms ({apart / together:.2f}x) | text encoder L={args.length} {txt:.1f} ms | "
              f"AdamW step fused {fused:.1f} ms, for-loop {loop:.1f} ms ({loop / fused:.2f}x)")


if __name__ == "__main__":
    main()
