"""Loader rules: bad rows become RowIssues with the right line, good rows load."""
from __future__ import annotations

from pathlib import Path

import pytest

from fedmm.data.manifest import ManifestError, Record, RowIssue, load_manifest, write_manifest

from .helpers import write_csv, write_png

HEADER = ["id", "image", "text", "label", "split"]


@pytest.fixture()
def bad_set(tmp_path: Path) -> Path:
    write_png(tmp_path / "images" / "a.png", 0)
    write_png(tmp_path / "images" / "b.png", 1)
    write_png(tmp_path / "images" / "e.png", 2)
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    rows = [
        ["a", "images/a.png", "clear lungs", "normal", "train"],            # line 2: good
        ["b", "images/b.png", "", "pneumonia", "train"],                    # line 3: good, image only
        ["c", "images/missing.png", "text survives", "normal", ""],         # line 4: image dropped
        ["d", "images/corrupt.png", "", "normal", "train"],                 # line 5: corrupt, no text
        ["e", "images/e.png", "multi\nline note", "martian", "train"],      # line 6-7: unknown label
        ["a", "images/a.png", "again", "normal", "train"],                  # line 8: duplicate id
        ["", "", "", "", ""],                                               # line 9: empty row
        ["f", "", "text only row", "pneumonia", "test"],                    # line 10: good
        ["g", "", "", "normal", "train"],                                   # line 11: no modality
        ["h", "", "unlabelled text", "", "train"],                          # line 12: empty label
    ]
    write_csv(tmp_path, HEADER, rows)
    return tmp_path


def _by_line(issues: list[RowIssue]) -> dict[int, str]:
    out: dict[int, str] = {}
    for i in issues:
        out[i.row] = out.get(i.row, "") + i.reason + "\n"
    return out


def test_bad_rows_reported_with_line_numbers(bad_set: Path) -> None:
    data = load_manifest(bad_set, classes=["normal", "pneumonia"])
    assert [r.id for r in data.records] == ["a", "b", "c", "f"]
    issues = _by_line(data.issues)
    assert sorted(issues) == [4, 5, 6, 8, 9, 11, 12]
    assert "image file not found" in issues[4] and "image dropped" in issues[4]
    assert "unreadable image" in issues[5] and "corrupt.png" in issues[5]
    assert "unknown label" in issues[6] and "martian" in issues[6]
    assert "duplicate id 'a'" in issues[8] and "line 2" in issues[8]
    assert "empty id" in issues[9]
    assert "no usable image and no text" in issues[11] and "no usable image and no text" in issues[5]
    assert "empty label" in issues[12]
    assert sum(i.row == 5 for i in data.issues) == 2   # lost its image, then skipped (no text)
    assert all(i.file == str(bad_set / "manifest.csv") for i in data.issues)
    assert str(data.issues[0]).startswith(f"{bad_set / 'manifest.csv'}:4: ")


def test_degraded_and_good_records(bad_set: Path) -> None:
    data = load_manifest(bad_set, classes=["normal", "pneumonia"])
    rec = {r.id: r for r in data.records}
    assert rec["a"].image == bad_set / "images" / "a.png" and rec["a"].image.is_absolute()
    assert rec["a"].text == "clear lungs" and rec["a"].labels == ("normal",) and rec["a"].split == "train"
    assert rec["b"].text is None and rec["b"].image is not None
    assert rec["c"].image is None and rec["c"].text == "text survives" and rec["c"].split is None
    assert rec["f"].image is None and rec["f"].split == "test"
    assert rec["a"].patient_id == "a" and rec["a"].site is None   # defaults without the columns
    assert data.classes == ["normal", "pneumonia"] and not data.multilabel
    assert data.lines == {"a": 2, "b": 3, "c": 4, "f": 10}


def test_default_classes_and_unlabelled_load(bad_set: Path) -> None:
    data = load_manifest(bad_set)   # no class list: 'martian' becomes a class
    assert data.classes == ["martian", "normal", "pneumonia"]
    assert "e" in {r.id for r in data.records}
    loose = load_manifest(bad_set, require_labels=False, verify_images=False)
    rec = {r.id: r for r in loose.records}
    assert rec["h"].labels == ()
    # without verification the corrupt file is only caught later (by encode_split)
    assert rec["d"].image is not None


def test_whole_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest.csv"):
        load_manifest(tmp_path)
    write_csv(tmp_path, ["id", "image", "label"], [["a", "", "x"]])
    with pytest.raises(ManifestError, match="text"):
        load_manifest(tmp_path)
    write_csv(tmp_path, ["id", "image", "text"], [["a", "", "x"]])
    with pytest.raises(ManifestError, match="label"):
        load_manifest(tmp_path)
    assert len(load_manifest(tmp_path, require_labels=False).records) == 1


def test_multilabel_column(tmp_path: Path) -> None:
    write_png(tmp_path / "i" / "1.png", 3)
    write_csv(tmp_path, ["id", "image", "text", "labels", "split", "patient_id", "site"], [
        ["1", "i/1.png", "t1", "effusion|cardiomegaly", "train", "p1", "A"],
        ["2", "", "t2", "no_finding", "train", "p1", "A"],
        ["3", "", "t3", " edema | effusion |effusion", "val", "", ""],
        ["4", "", "t4", "effusion|unknown", "val", "p3", "B"],
    ])
    data = load_manifest(tmp_path, classes=["cardiomegaly", "edema", "effusion", "no_finding"])
    assert data.multilabel
    rec = {r.id: r for r in data.records}
    assert rec["1"].labels == ("effusion", "cardiomegaly")
    assert rec["3"].labels == ("edema", "effusion") and rec["3"].patient_id == "3" and rec["3"].site is None
    assert rec["2"].patient_id == "p1" and rec["2"].site == "A"
    assert [i.row for i in data.issues] == [5] and "unknown" in data.issues[0].reason


def test_write_manifest_round_trip(tmp_path: Path) -> None:
    img = write_png(tmp_path / "images" / "x.png", 4)
    recs = [
        Record("x", img, 'report with "quotes", commas\nand a newline', ("a",), "train", "p", "s1"),
        Record("y", None, "text only", ("b",), None, "y", None),
        Record("z", img, None, (), "public", "z", None),
    ]
    path = write_manifest(tmp_path, recs, classes=["a", "b"])
    assert path == tmp_path / "manifest.csv"
    assert "images/x.png" in path.read_text() and str(tmp_path) not in path.read_text()
    back = load_manifest(tmp_path, require_labels=False)
    assert back.records == recs and back.issues == []
    multi = [Record("m", None, "t", ("a", "b"), None, "m", None)]
    write_manifest(tmp_path / "multi", multi)
    assert load_manifest(tmp_path / "multi").records == multi
    with pytest.raises(ValueError, match="not under"):
        write_manifest(tmp_path / "other", recs)
    with pytest.raises(ValueError, match="not in classes"):
        write_manifest(tmp_path, recs, classes=["a"])
