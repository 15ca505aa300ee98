"""Client-local encoders: MobileNetV3 for images, a small BERT for reports (docs/ARCHITECTURE.md §4).

Both return *tokens*: images -> last feature map flattened [B, h*w, C];
text -> last hidden states [B, L, H] (padding mask comes with the batch).
Randomly initialised by default; pretrained weights only from local files.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torchvision
from transformers import BertConfig, BertModel

from fedmm.models.depthwise import use_small_map_depthwise
from fedmm.models.segmented_bn import batch_segments, use_segmented_bn

BN_MOMENTUM = 0.1
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TEXT_SIZES = {"tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
              "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024)}


class ImageEncoder(nn.Module):
    """MobileNetV3 feature extractor on grayscale uint8 images."""

    def __init__(self, arch: str = "small", weights_file: str | Path | None = None,
                 fast_depthwise: bool = True) -> None:
        super().__init__()
        if arch not in ("small", "large"):
            raise ValueError(f"image encoder arch must be 'small' or 'large', got {arch!r}")
        net = getattr(torchvision.models, f"mobilenet_v3_{arch}")(weights=None)
        if weights_file:
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
            missing, _ = net.load_state_dict(state, strict=False)
            if any(k.startswith("features.") for k in missing):
                raise ValueError(f"{weights_file}: not a torchvision mobilenet_v3_{arch} state dict "
                                 f"(missing {len(missing)} feature weights, e.g. {missing[0]})")
        # torchvision builds MobileNetV3 with BatchNorm momentum 0.01 (tuned for ImageNet's
        # hundreds of thousands of steps). A client takes ~10 steps per epoch, so its running
        # statistics would stay near their initial values and the eval-mode network would
        # predict one class; 0.1 (PyTorch's default) converges within a few dozen steps.
        for m in net.features.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = BN_MOMENTUM
        if fast_depthwise:   # the small-map depthwise weight gradient (fedmm/models/depthwise.py)
            use_small_map_depthwise(net.features)
        use_segmented_bn(net.features)   # several batches in one call (fedmm/models/segmented_bn.py)
        # channels_last runs MobileNet's depthwise convolutions markedly faster on CPU
        self.features = net.features.to(memory_format=torch.channels_last)
        self.out_dim = net.features[-1].out_channels
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, segments: tuple[int, ...] | None = None) -> torch.Tensor:
        """Tokens [B, h*w, C] of uint8 images [B, 1, S, S]. ``segments`` (row counts summing to B):
        the rows are that many separate batches, each normalised by its own BatchNorm statistics
        in training mode, as separate calls would (one call is cheaper than several)."""
        x = images.float().div(255.0).expand(-1, 3, -1, -1)  # [B, 3, S, S]
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        if segments:   # the module walk only when asked for (not on every plain call)
            with batch_segments(self.features, segments):
                fmap = self.features(x)  # [B, C, h, w]
        else:
            fmap = self.features(x)  # [B, C, h, w]
        return fmap.flatten(2).transpose(1, 2)  # [B, h*w, C]


class TextEncoder(nn.Module):
    """BERT encoder (random init of size tiny|mini, or a local Hugging Face folder)."""

    def __init__(self, vocab_size: int, size: str = "tiny", model_dir: str | Path | None = None,
                 max_len: int = 128) -> None:
        super().__init__()
        if model_dir:
            self.bert = BertModel.from_pretrained(str(model_dir), local_files_only=True, add_pooling_layer=False)
        else:
            if size not in TEXT_SIZES:
                raise ValueError(f"text encoder size must be one of {list(TEXT_SIZES)}, got {size!r}")
            cfg = BertConfig(vocab_size=vocab_size, max_position_embeddings=max(128, max_len), **TEXT_SIZES[size])
            self.bert = BertModel(cfg, add_pooling_layer=False)
        self.out_dim = self.bert.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask.long())
        return out.last_hidden_state  # [B, L, H]
