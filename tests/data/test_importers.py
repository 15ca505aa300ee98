"""`fedmm data import`: MIMIC-CXR-JPG, Open-i and csv layouts become loadable dataset folders."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fedmm.cli.data_cmd import app
from fedmm.data.csv_import import import_csv
from fedmm.data.encode import encode_split
from fedmm.data.importing import ImportOptions
from fedmm.data.labels import LabelPolicy, parse_class_list
from fedmm.data.manifest import load_manifest
from fedmm.data.mimic import import_mimic
from fedmm.data.openi import import_openi
from fedmm.data.partition import PartitionConfig, partition_dataset
from fedmm.data.reports import report_text
from fedmm.data.tokenizer import load_tokenizer, train_wordpiece

from .import_fixtures import REPORT_1, make_mimic, make_openi, write_dicom, write_image, write_table

TEXT_1 = ("FINDINGS: The heart is mildly enlarged. Bilateral nodular opacities that most likely represent "
          "nipple shadows. IMPRESSION: Mild cardiomegaly. No acute process.")


def _rows(folder: Path, name: str = "manifest.csv") -> dict[str, dict]:
    with open(folder / name, newline="", encoding="utf-8") as fh:
        return {r["id"]: r for r in csv.DictReader(fh)}


def _issues(folder: Path) -> dict[str, str]:
    with open(folder / "import_issues.csv", newline="", encoding="utf-8") as fh:
        return {r["id"]: r["reason"] for r in csv.DictReader(fh)}


@pytest.fixture()
def mimic(tmp_path: Path) -> tuple[Path, Path]:
    return make_mimic(tmp_path)


def _mimic(tmp_path: Path, mimic, name: str, **policy) -> Path:
    src, reports = mimic
    extra = {k: policy.pop(k) for k in ("views", "all_images", "labeler", "sections", "ext") if k in policy}
    import_mimic(src, ImportOptions(out=tmp_path / name, site="mimic-cxr", policy=LabelPolicy(**policy)),
                 reports=reports, **extra)
    return tmp_path / name


def test_mimic_default_rows_views_text_and_skips(tmp_path: Path, mimic) -> None:
    out = _mimic(tmp_path, mimic, "zeros")
    rows = _rows(out)
    assert list(rows) == ["s50414267", "s53189527", "s54577367"]
    first = rows["s50414267"]
    assert first["image"] == "images/files/p10/p10000032/s50414267/aa02-pa.jpg"     # PA beats LATERAL
    assert rows["s53189527"]["image"].endswith("bb01-ap.jpg")                       # PA file missing: AP
    assert first["text"] == TEXT_1
    assert rows["s53189527"]["text"] == "IMPRESSION: No acute cardiopulmonary process."
    assert (first["labels"], first["uncertain"]) == ("cardiomegaly", "edema")
    assert rows["s54577367"]["labels"] == "edema|pleural_effusion|support_devices"
    assert [rows[i]["split"] for i in rows] == ["train", "val", "test"]              # validate -> val
    assert first["patient_id"] == rows["s53189527"]["patient_id"] == "p10000032" and first["site"] == "mimic-cxr"
    assert (out / first["image"]).is_file()
    assert _issues(out) == {"s57375967": "no image in the chosen views", "s50771383": "no positive finding",
                            "s51178377": "no label row", "s58913004": "image file not found",
                            "s55350604": "bad label value"}
    summary = json.loads((out / "import_summary.json").read_text())
    assert summary["written"] == 3 and summary["n_skipped"] == 5 and summary["classes"]["edema"] == 1

    data = load_manifest(out)                                  # fedmm's loader takes the folder as it is
    assert data.issues == [] and data.multilabel and len(data) == 3
    assert data.classes == ["cardiomegaly", "edema", "no_finding", "pleural_effusion", "support_devices"]
    assert data.records[0].labels == ("cardiomegaly",) and data.records[0].patient_id == "p10000032"


@pytest.mark.parametrize("policy, labels, skipped", [
    ("zeros", {"s50414267": "cardiomegaly"}, {"s50771383": "no positive finding"}),
    ("ones", {"s50414267": "cardiomegaly|edema", "s50771383": "pneumonia"}, {}),
    ("ignore", {"s50414267": "cardiomegaly"}, {"s50771383": "only uncertain finding(s)"}),
])
def test_mimic_uncertain_policies(tmp_path: Path, mimic, policy, labels, skipped) -> None:
    out = _mimic(tmp_path, mimic, policy, uncertain=policy)
    rows, issues = _rows(out), _issues(out)
    for rid, expected in labels.items():
        assert rows[rid]["labels"] == expected
    for rid, reason in skipped.items():
        assert rid not in rows and issues[rid] == reason
    if policy == "ones":
        assert rows["s50771383"]["text"] == "" and rows["s50771383"]["uncertain"] == "pneumonia"   # no report
        assert next(r for r in load_manifest(out).records if r.id == "s50771383").text is None


def test_mimic_single_label_classes_views_all_images(tmp_path: Path, mimic) -> None:
    single = _mimic(tmp_path, mimic, "single", single_label=True)
    rows = _rows(single)
    assert {i: r["label"] for i, r in rows.items()} == {"s50414267": "cardiomegaly", "s53189527": "no_finding"}
    assert _issues(single)["s54577367"] == "not exactly one positive finding"
    data = load_manifest(single)
    assert not data.multilabel and data.classes == ["cardiomegaly", "no_finding"]
    assert "s50414267" not in _rows(_mimic(tmp_path, mimic, "single_ones", single_label=True, uncertain="ones"))

    only = _mimic(tmp_path, mimic, "classes", classes=parse_class_list("Edema, pleural_effusion"))
    assert {i: r["labels"] for i, r in _rows(only).items()} == {"s54577367": "edema|pleural_effusion"}
    assert _issues(only)["s50414267"] == "no positive finding"        # uncertain edema only, zeros

    anyview = _rows(_mimic(tmp_path, mimic, "any", views=("PA", "AP", "*")))
    assert anyview["s57375967"]["image"].endswith("cc01-lat.jpg") and anyview["s57375967"]["labels"] == "pneumonia"

    per_image = _mimic(tmp_path, mimic, "all", all_images=True)
    assert list(_rows(per_image)) == ["aa02-pa", "bb01-ap", "ff01-ap"]
    assert _rows(per_image)["bb01-ap"]["patient_id"] == "p10000032"
    assert _issues(per_image)["bb02-pa"] == "image file not found"

    negbio = _rows(_mimic(tmp_path, mimic, "negbio", labeler="negbio", sections=("impression",)))
    assert negbio["s50414267"]["uncertain"] == "" and negbio["s50414267"]["text"] == \
        "IMPRESSION: Mild cardiomegaly. No acute process."


def test_mimic_dicom_release(tmp_path: Path, mimic) -> None:
    src, _ = mimic
    write_dicom(src / "files" / "p10" / "p10000032" / "s50414267" / "aa02-pa.dcm", np.array([[0, 10], [20, 30]]),
                photometric="MONOCHROME1", bits_stored=12, window=(15, 10))
    out = _mimic(tmp_path, mimic, "dcm", ext="dcm")
    rows = _rows(out)
    assert list(rows) == ["s50414267"] and rows["s50414267"]["image"].endswith("s50414267/aa02-pa.png")
    assert np.array(Image.open(out / rows["s50414267"]["image"])).tolist() == [[255, 255], [0, 0]]
    assert _issues(out)["s53189527"] == "image file not found"


def test_mimic_loader_encodes_and_partitions(tmp_path: Path, mimic) -> None:
    out = _mimic(tmp_path, mimic, "ones", uncertain="ones", views=("PA", "AP", "*"))
    data = load_manifest(out)
    train_wordpiece([r.text for r in data.records if r.text] * 5, tmp_path / "tok", vocab_size=200)
    enc = encode_split(data, load_tokenizer(tmp_path / "tok"), image_size=16, max_len=24)
    assert enc.images.shape == (5, 1, 16, 16) and bool(enc.has_image.all()) and enc.labels.shape == (5, 6)
    assert enc.has_text.tolist() == [True, True, False, False, True]
    cfg = PartitionConfig(n_clients=1, n_image_only=0, n_text_only=0, public_size=0, min_train_per_client=1,
                          test_fraction=0.2)
    summary = partition_dataset(out, tmp_path / "clients", cfg)
    assert summary["n_test"] >= 1 and load_manifest(tmp_path / "clients" / "test").records


def test_report_sections() -> None:
    assert report_text(REPORT_1) == TEXT_1
    assert report_text(" FINDINGS AND IMPRESSION: Clear lungs.\n") == "FINDINGS: Clear lungs."
    assert report_text("Lungs are clear; no headings at all.") == ""


def test_openi_labels_images_and_bad_files(tmp_path: Path) -> None:
    src = make_openi(tmp_path / "openi")
    out = tmp_path / "out"
    summary = import_openi(src, ImportOptions(out=out, site="openi"))
    rows = _rows(out)
    assert list(rows) == ["CXR1", "CXR2", "CXR3"]
    assert rows["CXR1"]["labels"] == "no_finding"                       # <automatic> terms are not used
    assert rows["CXR1"]["image"] == "images/CXR1_1_IM-0001-3001.png"
    assert rows["CXR1"]["text"] == "FINDINGS: The cardiac silhouette is within normal limits. " \
                                   "IMPRESSION: Normal chest x-XXXX."
    assert rows["CXR2"]["labels"] == "cardiomegaly" and rows["CXR2"]["image"].endswith("CXR2_IM-0652-2001.png")
    assert rows["CXR3"]["labels"] == "pleural_effusion|lung_opacity"    # normal dropped beside a pathology
    assert rows["CXR3"]["text"] == "IMPRESSION: Small right effusion with basilar opacity."
    assert rows["CXR3"]["patient_id"] == "CXR3" and rows["CXR3"]["site"] == "openi"
    issues = _issues(out)
    assert issues == {"CXR4": "no MeSH major term maps to a class", "5": "unreadable XML",
                      "CXR6": "no MeSH major term maps to a class", "7": "unreadable XML",
                      "CXR10": "image file not found"}
    assert summary.written == 3 and sum(summary.skipped.values()) == 5
    assert "EntitiesForbidden" in next(str(i) for i in summary.issues if i.id == "7")   # defusedxml refuses
    assert load_manifest(out).issues == []

    (tmp_path / "map.csv").write_text("term,class\nCalcified Granuloma,Lung Lesion\nnormal,\n", encoding="utf-8")
    again = import_openi(src, ImportOptions(out=out, overwrite=True, policy=LabelPolicy(single_label=True)),
                         mesh_map=tmp_path / "map.csv", all_images=True)
    rows = _rows(out)
    assert rows["CXR6_IM-2263-1001"]["label"] == "lung_lesion" and "CXR1_1_IM-0001-3001" not in rows
    assert rows["CXR2_IM-0652-2001"]["patient_id"] == "CXR2" and again.skipped["image file not found"] == 1
    assert _issues(out)["CXR3_IM-1384-1001"] == "not exactly one positive finding"


def test_csv_import_columns_dicom_and_bad_rows(tmp_path: Path) -> None:
    src = tmp_path / "site_a"
    write_image(src / "img" / "a.png", 1)
    write_image(src / "img" / "b.jpg", 2)
    write_dicom(src / "img" / "c.dcm", np.array([[0, 100], [200, 4095]]), photometric="MONOCHROME1",
                bits_stored=12)
    write_table(src / "table.csv", ["case", "file", "report", "dx", "part", "pid", "hospital"], [
        ["a", "img/a.png", "Small  effusion.", "effusion", "train", "P1", "north"],
        ["b", "img/b.jpg", "", "normal|effusion", "validation", "P1", ""],
        ["c", "img/c.dcm", "Dicom case.", "normal", "test", "", "south"],
        ["", "img/a.png", "no id", "normal", "", "", ""],
        ["d", "img/missing.png", "gone", "normal", "", "", ""],
        ["a", "img/a.png", "again", "normal", "", "", ""],
        ["e", "", "text only", "normal", "", "", ""],
        ["f", "img/a.png", "no label", "", "", "", ""],
    ])
    opts = ImportOptions(out=tmp_path / "out", site="fallback", link="copy")
    summary = import_csv(src / "table.csv", opts, id_col="case", image_col="file", text_col="report", label_col="dx",
                         label_sep="|", split_col="part", patient_col="pid", site_col="hospital")
    rows = _rows(tmp_path / "out")
    assert list(rows) == ["a", "b", "c", "e"] and summary.no_text == 1
    assert rows["b"]["labels"] == "normal|effusion" and rows["b"]["split"] == "val"
    assert (rows["a"]["patient_id"], rows["a"]["site"], rows["b"]["site"]) == ("P1", "north", "fallback")
    assert rows["a"]["text"] == "Small effusion." and rows["e"]["image"] == "" and rows["c"]["patient_id"] == "c"
    assert rows["c"]["image"] == "images/img/c.png"                     # DICOM written as windowed PNG
    # no window: 12-bit min..max stretch, then MONOCHROME1 inverted: 255 * (1 - v / 4095)
    assert np.array(Image.open(tmp_path / "out" / rows["c"]["image"])).tolist() == [[255, 249], [243, 0]]
    assert _issues(tmp_path / "out") == {"": "empty id", "d": "image file not found", "a": "duplicate id",
                                         "f": "no positive finding"}
    assert len(load_manifest(tmp_path / "out")) == 4

    import_csv(src / "table.csv", ImportOptions(out=tmp_path / "keep", keep_dicom=True, resize=0), id_col="case",
               image_col="file", text_col="report", label_col="dx", label_sep="|")
    kept = load_manifest(tmp_path / "keep")
    dcm = next(r for r in kept.records if r.id == "c")
    assert dcm.image.suffix == ".dcm" and kept.issues == []            # the loader reads .dcm itself


def test_csv_chexpert_columns_and_resize(tmp_path: Path) -> None:
    root = tmp_path / "chexpert"
    write_image(root / "CheXpert-v1.0-small" / "train" / "patient00001" / "study1" / "view1_frontal.jpg", 3,
                size=(40, 30))
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Edema", "Pneumonia"]
    write_table(root / "CheXpert-v1.0-small" / "train.csv.gz", header, [
        ["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "F", 68, "Frontal", "AP", "", "1.0", "-1.0"],
    ])
    for policy, expected in (("zeros", "edema"), ("ones", "edema|pneumonia")):
        out = tmp_path / policy
        import_csv(root / "CheXpert-v1.0-small" / "train.csv.gz",
                   ImportOptions(out=out, resize=16, policy=LabelPolicy(uncertain=policy)), id_col="Path",
                   image_col="Path", finding_cols=["No Finding", "Edema", "Pneumonia"], image_root=root)
        row = next(iter(_rows(out).values()))
        assert row["labels"] == expected and row["uncertain"] == "pneumonia"
        with Image.open(out / row["image"]) as im:
            assert row["image"].endswith("view1_frontal.png") and im.size == (12, 16)   # longer side 16


def test_cli_import_commands(tmp_path: Path, mimic) -> None:
    runner = CliRunner()
    src, reports = mimic
    res = runner.invoke(app, ["import", "mimic-cxr", str(src), "--reports", str(reports), "--out",
                              str(tmp_path / "m"), "--uncertain", "ignore", "--link", "symlink"])
    assert res.exit_code == 0, res.output
    assert "wrote 3 rows" in res.output and "skipped 5 rows" in res.output and "only uncertain" in res.output
    assert (tmp_path / "m" / "images" / "files" / "p10" / "p10000032" / "s50414267" / "aa02-pa.jpg").is_symlink()
    again = runner.invoke(app, ["import", "mimic-cxr", str(src), "--out", str(tmp_path / "m")])
    assert again.exit_code == 1 and "--overwrite" in again.output
    bad = runner.invoke(app, ["import", "mimic-cxr", str(src), "--out", str(tmp_path / "x"), "--uncertain", "maybe"])
    assert bad.exit_code == 2 and "zeros, ones, ignore" in bad.output
    inside = runner.invoke(app, ["import", "mimic-cxr", str(src), "--out", str(src.parent)])
    assert inside.exit_code == 1 and "holds the source" in inside.output
    res = runner.invoke(app, ["import", "openi", str(make_openi(tmp_path / "o")), "--out", str(tmp_path / "oo"),
                              "--single-label", "--limit", "2"])
    assert res.exit_code == 0, res.output
    assert list(_rows(tmp_path / "oo")) == ["CXR1", "CXR2"]
    res = runner.invoke(app, ["import", "csv", str(tmp_path / "nowhere.csv"), "--out", str(tmp_path / "c"),
                              "--label-col", "dx"])
    assert res.exit_code == 1 and "no such csv file" in res.output


def test_csv_images_outside_root_get_distinct_names(tmp_path: Path) -> None:
    one, two = write_image(tmp_path / "elsewhere" / "1.png", 5), write_image(tmp_path / "other" / "1.png", 6)
    write_table(tmp_path / "t" / "table.csv", ["id", "image", "label"],
                [["x/1", str(one), "a"], ["x_1", str(two), "b"], ["y", str(one), "a"]])
    import_csv(tmp_path / "t" / "table.csv", ImportOptions(out=tmp_path / "out"), label_col="label")
    rows = _rows(tmp_path / "out")
    assert [rows[i]["image"] for i in ("x/1", "x_1", "y")] == ["images/x_1.png", "images/x_1_1.png", "images/x_1.png"]
    assert np.array_equal(np.array(Image.open(tmp_path / "out" / "images" / "x_1_1.png")), np.array(Image.open(two)))
