"""Tiny synthetic copies of the published dataset layouts (no real patient data)."""
from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

from fedmm.data.labels import CHEXPERT_FINDINGS


def write_image(path: Path, seed: int, size: tuple[int, int] = (20, 24)) -> Path:
    """A small random grayscale image; the format follows the suffix (.jpg / .png)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(path)
    return path


def write_table(path: Path, header: list[str], rows: list[list]) -> Path:
    """A csv file, gzip-compressed when ``path`` ends in ``.gz``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(buf.getvalue().encode("utf-8")))
    else:
        path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 16,
                signed: bool = False, window: tuple[float, float] | None = None,
                rescale: tuple[float, float] | None = None) -> Path:
    """A minimal uncompressed 16-bit DX DICOM file written with pydicom."""
    from pydicom import dcmwrite
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"   # Digital X-Ray Image, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "synthetic"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = pixels.astype("<i2" if signed else "<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


# ---------------------------------------------------------------- MIMIC-CXR-JPG
META_HEADER = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
               "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
               "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
REPORT_1 = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 COMPARISON:  None.

 FINDINGS:

 The heart is mildly enlarged.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 Mild cardiomegaly.  No acute process.
"""
REPORT_2 = """                                 FINAL REPORT
 INDICATION:  Cough.

 IMPRESSION:  No acute cardiopulmonary
 process.
"""
REPORT_6 = " FINDINGS:  Moderate edema, bilateral effusions.  ET tube in place.\n IMPRESSION: Edema.\n"
# subject, study, [(dicom_id, view, file exists)], {finding: value} or None (no label row), report, split
MIMIC_STUDIES = [
    ("10000032", "50414267", [("aa01-lat", "LATERAL", True), ("aa02-pa", "PA", True)],
     {"Cardiomegaly": "1.0", "Edema": "-1.0", "Pleural Effusion": "0.0"}, REPORT_1, "train"),
    ("10000032", "53189527", [("bb01-ap", "AP", True), ("bb02-pa", "PA", False)],
     {"No Finding": "1.0"}, REPORT_2, "validate"),
    ("10000764", "57375967", [("cc01-lat", "LATERAL", True)], {"Pneumonia": "1.0"}, None, "test"),
    ("10000898", "50771383", [("dd01-pa", "PA", True)], {"Pneumonia": "-1.0", "Lung Opacity": "0.0"}, None, "train"),
    ("10000935", "51178377", [("ee01-pa", "PA", True)], None, None, "train"),
    ("10000980", "54577367", [("ff01-ap", "AP", True)],
     {"Edema": "1.0", "Pleural Effusion": "1.0", "Support Devices": "1.0"}, REPORT_6, "test"),
    ("10001217", "58913004", [("gg01-pa", "PA", False)], {"Atelectasis": "1.0"}, None, "train"),
    ("10001401", "55350604", [("hh01-pa", "PA", True)], {"Atelectasis": "2.0"}, None, "train"),
]


def make_mimic(root: Path) -> tuple[Path, Path]:
    """MIMIC-CXR-JPG root (gzipped tables, negbio plain) and a separate MIMIC-CXR reports root."""
    src, reports = root / "mimic-cxr-jpg" / "2.0.0", root / "mimic-cxr-reports"
    meta, labels, negbio, split = [], [], [], []
    for k, (subject, study, images, findings, report, part) in enumerate(MIMIC_STUDIES):
        folder = src / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        for j, (dicom, view, exists) in enumerate(images):
            meta.append([dicom, subject, study, f"CHEST ({view})", view, 3056, 2544, 21800506, 213014.531,
                         "CHEST (PA AND LAT)", "postero-anterior", "Erect"])
            split.append([dicom, study, subject, part])
            if exists:
                write_image(folder / f"{dicom}.jpg", seed=10 * k + j)
        if findings is not None:
            labels.append([subject, study, *(findings.get(c, "") for c in CHEXPERT_FINDINGS)])
            neg = {c: ("0.0" if v == "-1.0" else v) for c, v in findings.items()}
            negbio.append([subject, study, *(neg.get(c, "") for c in CHEXPERT_FINDINGS)])
        if report is not None:
            path = reports / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(report, encoding="utf-8")
    label_header = ["subject_id", "study_id", *CHEXPERT_FINDINGS]
    write_table(src / "mimic-cxr-2.0.0-metadata.csv.gz", META_HEADER, meta)
    write_table(src / "mimic-cxr-2.0.0-chexpert.csv.gz", label_header, labels)
    write_table(src / "mimic-cxr-2.0.0-negbio.csv", label_header, negbio)
    write_table(src / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split)
    return src, reports


# ---------------------------------------------------------------- Open-i (IU X-ray)
def openi_xml(uid: str, findings: str, impression: str, majors: list[str], images: list[str],
              automatic: tuple[str, ...] = ()) -> str:
    """One report in the Open-i ``ecgen-radiology`` XML format."""
    abstract = "".join(f'<AbstractText Label="{label}">{text}</AbstractText>\n' for label, text in
                       (("COMPARISON", "None."), ("INDICATION", "Cough"), ("FINDINGS", findings),
                        ("IMPRESSION", impression)))
    mesh = "".join(f"<major>{t}</major>" for t in majors) + "".join(f"<automatic>{t}</automatic>" for t in automatic)
    figures = "".join(f'<parentImage id="{i}"><figureId>F{n + 1}</figureId><caption>Xray Chest PA and Lateral'
                      f'</caption><panel type="single"><url>/hadoop/storage/radiology/extract/{i}.jpg</url>'
                      f'</panel></parentImage>\n' for n, i in enumerate(images))
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<eCitation><meta type="rr"/><uId id="{uid}"/>'
            f'<pmcId id="{uid[3:]}"/><docSource>CXR</docSource><IUXRId id="{uid[3:]}"/>'
            f'<MedlineCitation Owner="Indiana University" Status="supplied by publisher">'
            f'<Article PubModel="Electronic"><ArticleTitle>Indiana University Chest X-ray Collection'
            f'</ArticleTitle><Abstract>\n{abstract}</Abstract></Article><EIDs><EID>{uid}</EID></EIDs>'
            f'</MedlineCitation><MeSH>{mesh}</MeSH>\n{figures}</eCitation>\n')


def make_openi(root: Path) -> Path:
    """An Open-i folder: ecgen-radiology/<n>.xml + NLMCXR_png/<image id>.png."""
    xml, png = root / "ecgen-radiology", root / "NLMCXR_png"
    xml.mkdir(parents=True)
    reports = {
        "1": openi_xml("CXR1", "The cardiac silhouette is within normal limits.", "Normal chest x-XXXX.",
                       ["normal"], ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"], automatic=("Cardiomegaly",)),
        "2": openi_xml("CXR2", "Borderline cardiomegaly.", "No acute disease.",
                       ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"],
                       ["CXR2_IM-0652-1001", "CXR2_IM-0652-2001"]),
        "3": openi_xml("CXR3", "", "Small right effusion with basilar opacity.",
                       ["Pleural Effusion/right/small", "Opacity/lung/base/right", "normal"], ["CXR3_IM-1384-1001"]),
        "4": openi_xml("CXR4", "Lungs clear.", "No acute findings.", ["No Indexing"], ["CXR4_IM-2050-1001"]),
        "6": openi_xml("CXR6", "Calcified granuloma right upper lobe.", "No active disease.",
                       ["Calcified Granuloma/lung/upper lobe/right"], ["CXR6_IM-2263-1001"]),
        "10": openi_xml("CXR10", "Clear lungs.", "Normal.", ["normal"], ["CXR10_IM-0002-1001"]),
    }
    for stem, text in reports.items():
        (xml / f"{stem}.xml").write_text(text, encoding="utf-8")
    (xml / "5.xml").write_text("<eCitation><uId id='CXR5'/><MeSH><major>normal</major></eCitation>", encoding="utf-8")
    (xml / "7.xml").write_text('<?xml version="1.0"?>\n<!DOCTYPE e [<!ENTITY a "normal">]>\n'
                               '<eCitation><uId id="CXR7"/><MeSH><major>&a;</major></MeSH></eCitation>\n',
                               encoding="utf-8")
    for k, image in enumerate(["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_IM-0652-2001",
                               "CXR3_IM-1384-1001", "CXR4_IM-2050-1001", "CXR6_IM-2263-1001"]):
        write_image(png / f"{image}.png", seed=100 + k)
    return root
