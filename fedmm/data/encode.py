"""Turn a loaded dataset folder into tensors: images, token ids, masks, labels."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
from PIL import Image

from .images import open_image
from .manifest import ManifestData, Record, RowIssue
from .modality import DATA_MODALITIES

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


@dataclass
class EncodedSplit:
    """A dataset split as tensors; rows align with ``ids``."""

    images: torch.Tensor          # [N, 1, S, S] uint8 (zeros where has_image is False)
    input_ids: torch.Tensor       # [N, L] int64
    attention_mask: torch.Tensor  # [N, L] bool
    has_image: torch.Tensor       # [N] bool
    has_text: torch.Tensor        # [N] bool
    labels: torch.Tensor          # [N] int64 (-1 = unlabelled) | [N, C] float32 multi-hot
    ids: list[str]
    classes: list[str] = field(default_factory=list)
    multilabel: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index) -> "EncodedSplit":
        """Rows selected by ``index`` (int list/array/tensor, bool mask, or slice)."""
        rows = torch.arange(len(self))[index]
        rows = rows.reshape(-1)
        return EncodedSplit(
            images=self.images[rows], input_ids=self.input_ids[rows],
            attention_mask=self.attention_mask[rows], has_image=self.has_image[rows],
            has_text=self.has_text[rows], labels=self.labels[rows],
            ids=[self.ids[i] for i in rows.tolist()], classes=list(self.classes),
            multilabel=self.multilabel,
        )

    def to(self, device: torch.device | str) -> "EncodedSplit":
        """Copy of this split with every tensor moved to ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        return EncodedSplit(**moved)


def load_image(path, size: int) -> np.ndarray:
    """Decode an image file (DICOM too, see :mod:`fedmm.data.images`) to grayscale uint8 [size, size]:
    pad to square (black), then resize."""
    with open_image(path) as im:
        im.load()
        if im.mode in _HIGH_DEPTH_MODES:   # 16-bit / float: rescale to 8 bit instead of clipping
            arr = np.asarray(im, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
            gray = Image.fromarray(arr.round().astype(np.uint8))
        elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            gray = im.convert("RGBA")
            canvas = Image.new("RGBA", gray.size, (0, 0, 0, 255))
            gray = Image.alpha_composite(canvas, gray).convert("L")
        else:
            gray = im.convert("L")
    w, h = gray.size
    if w != h:
        side = max(w, h)
        square = Image.new("L", (side, side), 0)
        square.paste(gray, ((side - w) // 2, (side - h) // 2))
        gray = square
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(gray, dtype=np.uint8)


def _encode_labels(records: list[Record], classes: list[str], multilabel: bool) -> torch.Tensor:
    index = {name: i for i, name in enumerate(classes)}
    if multilabel:
        out = torch.zeros(len(records), len(classes), dtype=torch.float32)
        for r, rec in enumerate(records):
            for name in rec.labels:
                if name in index:
                    out[r, index[name]] = 1.0
        return out
    return torch.tensor([index.get(rec.labels[0], -1) if rec.labels else -1 for rec in records],
                        dtype=torch.int64)


def encode_split(data: ManifestData, tokenizer, image_size: int = 64, max_len: int = 64) -> EncodedSplit:
    """Encode every record of ``data``.

    Images become grayscale ``image_size`` squares; an image that fails to
    decode gets ``has_image=False`` and a :class:`RowIssue` appended to
    ``data.issues`` (with the record's manifest line); a record left with no
    modality at all is then dropped from the result (``ids`` tells which
    records the rows are). Texts are tokenised with
    padding to ``max_len`` and truncation; missing texts get all-padding ids and
    an all-False mask. Labels: class indices (-1 unlabelled) or multi-hot.
    """
    records = data.records
    n = len(records)
    images = torch.zeros(n, 1, image_size, image_size, dtype=torch.uint8)
    has_image = torch.zeros(n, dtype=torch.bool)
    manifest = str(data.root / "manifest.csv")
    for i, rec in enumerate(records):
        if rec.image is None:
            continue
        try:
            images[i, 0] = torch.from_numpy(load_image(rec.image, image_size))
            has_image[i] = True
        except Exception as exc:  # corrupt data must not stop the run
            fate = "image dropped" if rec.text is not None else "no modality left; row dropped"
            data.issues.append(RowIssue(manifest, data.lines.get(rec.id, 0), f"record {rec.id!r}: cannot decode "
                                        f"image {rec.image}: {type(exc).__name__}: {exc}; {fate}"))
    has_text = torch.tensor([rec.text is not None for rec in records], dtype=torch.bool)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((n, max_len), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros(n, max_len, dtype=torch.bool)
    text_rows = [i for i, rec in enumerate(records) if rec.text is not None]
    if text_rows:
        enc = tokenizer([records[i].text for i in text_rows], padding="max_length", truncation=True,
                        max_length=max_len, return_tensors="pt")
        rows = torch.tensor(text_rows)
        input_ids[rows] = enc["input_ids"].to(torch.int64)
        attention_mask[rows] = enc["attention_mask"].to(torch.bool)
    enc = EncodedSplit(
        images=images, input_ids=input_ids, attention_mask=attention_mask,
        has_image=has_image, has_text=has_text,
        labels=_encode_labels(records, data.classes, data.multilabel),
        ids=[rec.id for rec in records], classes=list(data.classes), multilabel=data.multilabel,
    )
    usable = has_image | has_text
    return enc if bool(usable.all()) else enc.subset(usable)


def hide_modality(split: EncodedSplit, modalities: str, drop_empty: bool = True) -> EncodedSplit:
    """Hide a modality everywhere (``data.modalities``, the complementarity study): ``image``
    keeps only images, ``text`` only reports, ``both`` everything. Rows left with neither are
    dropped unless ``drop_empty`` is False (prediction keeps every row it was given)."""
    if modalities not in DATA_MODALITIES:
        raise ValueError(f"data.modalities must be {'|'.join(DATA_MODALITIES)}, got {modalities!r}")
    if modalities == "both":
        return split
    if modalities == "image":
        split.has_text = torch.zeros_like(split.has_text)
    else:
        split.has_image = torch.zeros_like(split.has_image)
    return split.subset(torch.nonzero(split.has_image | split.has_text).squeeze(1)) if drop_empty else split
