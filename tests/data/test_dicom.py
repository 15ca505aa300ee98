"""DICOM decoding: modality LUT, VOI windowing, MONOCHROME1 inversion, 16-bit, and the loader's use of it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmm.data.encode import load_image
from fedmm.data.images import is_dicom, open_image, read_dicom, read_image, verify_image
from fedmm.data.manifest import load_manifest

from .helpers import write_csv, write_png
from .import_fixtures import write_dicom


def _linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR windowing onto [0, 1] (independent of pydicom)."""
    c, w = center - 0.5, width - 1
    out = (x - c) / w + 0.5
    return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, out))


def test_monochrome1_window_inverted(tmp_path: Path) -> None:
    stored = np.array([[0, 1536, 1800], [2048, 2300, 2560], [3000, 4095, 1537]])
    path = write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", bits_stored=12,
                       window=(2048, 1024))
    got = read_dicom(path)
    expected = np.rint((1.0 - _linear_window(stored.astype(float), 2048, 1024)) * 255).astype(np.uint8)
    assert got.dtype == np.uint8 and got.shape == (3, 3)
    assert got.tolist() == expected.tolist()
    assert got[0, 0] == got[0, 1] == 255 and got[1, 2] == got[2, 0] == got[2, 1] == 0   # clipped + inverted
    assert got[1, 0] == 127                                    # window centre is mid-grey


def test_monochrome2_window_with_rescale_signed(tmp_path: Path) -> None:
    stored = np.array([[0, 1024, 1064], [1264, 2048, 900]])          # signed 16-bit, HU = stored - 1024
    path = write_dicom(tmp_path / "ct.dcm", stored, bits_stored=16, signed=True, window=(40, 400),
                       rescale=(1.0, -1024.0))
    got = read_dicom(path)
    expected = np.rint(_linear_window(stored - 1024.0, 40, 400) * 255).astype(np.uint8)
    assert got.tolist() == expected.tolist()
    assert got[0, 0] == 0 and got[0, 2] == 128 and got[1, 0] == got[1, 1] == 255


def test_16bit_without_window_stretches_min_max(tmp_path: Path) -> None:
    stored = np.array([[1000, 3000], [5000, 1000]])
    got = read_dicom(write_dicom(tmp_path / "raw.dcm", stored, bits_stored=16))
    assert got.tolist() == [[0, 128], [255, 0]]
    inverted = read_dicom(write_dicom(tmp_path / "raw1.dcm", stored, photometric="MONOCHROME1"))
    assert inverted.tolist() == [[255, 128], [0, 255]]   # 127.5 rounds to even


def test_loader_functions_accept_dicom(tmp_path: Path) -> None:
    stored = np.tile(np.arange(0, 4096, 128), (32, 1))               # 32 x 32 gradient, 12-bit
    path = write_dicom(tmp_path / "ds" / "images" / "g.DCM", stored, bits_stored=12)
    assert is_dicom(path) and not is_dicom(tmp_path / "x.png")
    verify_image(path)
    assert read_image(path).tolist() == read_dicom(path).tolist()
    with open_image(path) as im:
        assert im.mode == "L" and im.size == (32, 32)
    small = load_image(path, 8)                                      # what encode_split does per record
    assert small.shape == (8, 8) and small[:, 0].max() < 40 and small[:, -1].min() > 215

    (tmp_path / "ds" / "images" / "bad.dcm").write_bytes(b"not a dicom file at all")
    write_png(tmp_path / "ds" / "images" / "p.png", seed=1)
    write_csv(tmp_path / "ds", ["id", "image", "text", "label"], [
        ["a", "images/g.DCM", "", "x"], ["b", "images/bad.dcm", "report", "y"], ["c", "images/p.png", "", "x"]])
    data = load_manifest(tmp_path / "ds")
    assert [r.id for r in data.records] == ["a", "b", "c"]
    assert data.records[0].image is not None and data.records[1].image is None     # bad DICOM: image dropped
    assert len(data.issues) == 1 and "unreadable image" in data.issues[0].reason
    with pytest.raises(ValueError, match="not a readable DICOM"):
        read_dicom(tmp_path / "ds" / "images" / "bad.dcm")
