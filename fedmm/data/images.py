"""Open image files for the loader and the importers, DICOM included.

Every image fedmm reads goes through this module: :func:`open_image` (a PIL
image; used by :func:`fedmm.data.encode.load_image`), :func:`read_image` (a
2-D uint8 array) and :func:`verify_image` (a cheap header check; used by
:func:`fedmm.data.manifest.load_manifest`). A path ending in ``.dcm`` /
``.dicom`` is read with ``pydicom`` by :func:`read_dicom`:

1. the stored pixels (first frame of a multi-frame file; colour is turned to luminance);
2. the Modality LUT / ``RescaleSlope`` + ``RescaleIntercept`` (``apply_modality_lut``);
3. the VOI LUT or the ``WindowCenter`` / ``WindowWidth`` windowing (``apply_voi_lut``,
   first window); the windowed range ``[y_min, y_max]`` pydicom maps to is then
   stretched to 0..255, so a pixel at or below the window is 0 and at or above it 255
   (a VOI LUT table's output is stretched by its min..max);
4. without any VOI data, 9..16-bit pixels are stretched min..max of the image
   (as :func:`fedmm.data.encode.load_image` does for 16-bit PNGs); 8-bit pixels stay as they are;
5. ``MONOCHROME1`` (white = low values) is inverted, so bone is always bright.

Compressed transfer syntaxes need pydicom's optional decoders (pylibjpeg, gdcm); without
them :func:`read_dicom` raises ``ValueError`` naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

DICOM_SUFFIXES = (".dcm", ".dicom")
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_PROBE = 1e12   # beyond any stored value: windowing maps it to y_min / y_max


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as DICOM (its name ends in ``.dcm`` or ``.dicom``)."""
    return Path(path).suffix.lower() in DICOM_SUFFIXES


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - pydicom is in install_requires
        raise ValueError("reading DICOM files needs pydicom: pip install pydicom") from exc
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pragma: no cover - pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return pydicom, apply_modality_lut, apply_voi_lut


def _stretch(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` linearly onto ``[0, 1]`` (clipped); a flat range gives zeros."""
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(arr.shape, dtype=np.float64)
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0)


def dicom_to_uint8(ds) -> np.ndarray:
    """The displayed grayscale image of a pydicom dataset as uint8 [H, W] (see the module docstring)."""
    _, apply_modality_lut, apply_voi_lut = _pydicom()
    arr = np.asarray(ds.pixel_array)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    if samples > 1:   # pixel_array gives RGB for colour data
        rgb = arr.astype(np.float64)
        gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    if arr.ndim != 2:
        raise ValueError(f"unexpected DICOM pixel array shape {arr.shape}")
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if ds.get("VOILUTSequence"):
        values = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
        unit = _stretch(values, float(values.min()), float(values.max()))
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        lo, hi = np.asarray(apply_voi_lut(np.array([-_PROBE, _PROBE]), ds), dtype=np.float64)
        unit = _stretch(np.asarray(apply_voi_lut(values, ds), dtype=np.float64), float(lo), float(hi))
    elif int(ds.get("BitsStored", 8) or 8) <= 8 and values.min() >= 0 and values.max() <= 255:
        unit = values / 255.0
    else:
        unit = _stretch(values, float(values.min()), float(values.max()))
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        unit = 1.0 - unit
    return np.rint(unit * 255.0).astype(np.uint8)


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """Decode a DICOM file to a uint8 grayscale [H, W] array (windowed, MONOCHROME1 inverted).

    Raises ``ValueError`` when the file is no DICOM, has no pixel data or cannot be decoded."""
    pydicom, _, _ = _pydicom()
    try:
        ds = pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise ValueError(f"{path}: DICOM file has no pixel data")
    try:
        return dicom_to_uint8(ds)
    except Exception as exc:  # missing decoder, bad attributes: one message naming the file
        raise ValueError(f"{path}: cannot decode DICOM pixels ({type(exc).__name__}: {exc})") from exc


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Any supported image file as uint8 grayscale [H, W].

    DICOM through :func:`read_dicom`; other formats through PIL (16-bit / float
    stretched min..max, transparency composited on black, colour to luminance)."""
    if is_dicom(path):
        return read_dicom(path)
    with Image.open(path) as im:
        im.load()
        if im.mode in _HIGH_DEPTH_MODES:
            arr = np.asarray(im, dtype=np.float64)
            return np.rint(_stretch(arr, float(arr.min()), float(arr.max())) * 255.0).astype(np.uint8)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            return np.array(Image.alpha_composite(canvas, rgba).convert("L"), dtype=np.uint8)
        return np.array(im.convert("L"), dtype=np.uint8)


def open_image(path: str | os.PathLike) -> Image.Image:
    """A PIL image for ``path``: the file itself, or for DICOM the decoded 8-bit (mode ``L``) image."""
    if is_dicom(path):
        return Image.fromarray(read_dicom(path))
    return Image.open(path)


def verify_image(path: str | os.PathLike) -> None:
    """Check the file header without decoding the pixels; raise when it is no usable image.

    PIL's ``verify`` for ordinary images; for DICOM, pydicom must parse the file and find pixel data."""
    if not is_dicom(path):
        with Image.open(path) as im:
            im.verify()
        return
    pydicom, _, _ = _pydicom()
    ds = pydicom.dcmread(path, defer_size="64 KB")
    if "PixelData" not in ds:
        raise ValueError("DICOM file has no pixel data")
