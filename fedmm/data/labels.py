"""Finding labels for the importers: CheXpert names, uncertain-label policies, single-label filter.

Class names are the CheXpert findings in ``snake_case`` (``No Finding`` ->
``no_finding``, ``Pleural Effusion`` -> ``pleural_effusion``), the convention of
the other fedmm data sets; :func:`class_name` makes them from a column or term.

CheXpert-style labeler values (MIMIC-CXR chexpert/negbio tables, CheXpert's own
csv) are ``1`` positive, ``0`` negative, ``-1`` uncertain and empty = not
mentioned (= negative). An uncertain finding is resolved by the policy
(``--uncertain``) of the CheXpert paper (Irvin et al., 2019):

* ``zeros`` (U-Zeros, default): uncertain = negative;
* ``ones`` (U-Ones): uncertain = positive;
* ``ignore`` (U-Ignore): the uncertain finding is left out of that study's labels
  (fedmm's manifest has no per-finding mask, so it is not listed as positive), and
  a study whose only findings are uncertain is dropped.

Either way the uncertain findings of a study are kept in the manifest's extra
``uncertain`` column. A study left with no positive finding is skipped (the
manifest has no all-negative row); with ``--single-label`` only studies with
exactly one positive class (``no_finding`` counting as one) are kept, for
fedmm's single-label pipeline. ``--classes`` restricts the findings considered.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

CHEXPERT_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)
NO_FINDING = "no_finding"
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
NO_POSITIVE = "no positive finding"
ONLY_UNCERTAIN = "only uncertain finding(s)"
NOT_SINGLE = "not exactly one positive finding"


def class_name(name: str) -> str:
    """``snake_case`` class name of a finding column or term (``Lung Opacity`` -> ``lung_opacity``)."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def parse_class_list(text: str | None) -> tuple[str, ...] | None:
    """Comma-separated class names (any spelling :func:`class_name` accepts); ``None`` when empty."""
    if not text or not text.strip():
        return None
    if text.strip().lower() == "chexpert":
        return tuple(class_name(n) for n in CHEXPERT_FINDINGS)
    names = [class_name(part) for part in text.split(",") if part.strip()]
    return tuple(dict.fromkeys(n for n in names if n)) or None


@dataclass(frozen=True)
class LabelPolicy:
    """How raw findings become a study's labels (see the module docstring)."""

    uncertain: str = "zeros"
    single_label: bool = False
    classes: tuple[str, ...] | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` for an unknown uncertain policy."""
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise ValueError(f"uncertain policy {self.uncertain!r}: use one of {', '.join(UNCERTAIN_POLICIES)}")

    def keeps(self, name: str) -> bool:
        """Whether class ``name`` (any spelling of it) is considered (``classes`` unset = every class)."""
        return self.classes is None or class_name(name) in self.classes


def parse_value(raw: str | None) -> float:
    """A labeler cell as 1.0 / 0.0 / -1.0 (empty = 0.0); ``ValueError`` for anything else."""
    text = (raw or "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value not in (1.0, 0.0, -1.0):
        raise ValueError(f"value {text!r} is not 1, 0, -1 or empty")
    return value


def findings_labels(values: Mapping[str, str | None], policy: LabelPolicy) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(positive, uncertain)`` class names of one study from its finding columns.

    ``values`` maps a finding column (e.g. ``Pleural Effusion``) to its cell. The
    uncertain policy is applied (``ones`` lists uncertain findings as positive);
    classes outside ``policy.classes`` are skipped. ``ValueError`` names a bad cell."""
    positive: list[str] = []
    uncertain: list[str] = []
    for column, raw in values.items():
        name = class_name(column)
        if not policy.keeps(name):
            continue
        try:
            value = parse_value(raw)
        except ValueError as exc:
            raise ValueError(f"{column}: {exc}") from None
        if value == 1.0:
            positive.append(name)
        elif value == -1.0:
            uncertain.append(name)
    if policy.uncertain == "ones":
        positive.extend(uncertain)
    return tuple(dict.fromkeys(positive)), tuple(uncertain)


def finding_columns(policy: LabelPolicy, findings: Iterable[str] = CHEXPERT_FINDINGS) -> list[str]:
    """The finding columns ``policy.classes`` selects; ``ValueError`` for a class that is no finding."""
    if policy.classes is None:
        return list(findings)
    known = {class_name(c): c for c in findings}
    unknown = [n for n in policy.classes if n not in known]
    if unknown:
        raise ValueError(f"unknown class(es) {', '.join(unknown)}; the findings are {', '.join(known)}")
    return [known[n] for n in policy.classes]


def finish_labels(labels: Iterable[str], uncertain: Iterable[str],
                  policy: LabelPolicy) -> tuple[tuple[str, ...], tuple[str, str] | None]:
    """Apply the class filter and the single-label rule.

    Returns ``(labels, None)`` for a usable study, else ``((), (reason, detail))``."""
    kept = tuple(dict.fromkeys(n for n in labels if policy.keeps(n)))
    unsure = [n for n in uncertain if policy.keeps(n)]
    if not kept:
        if unsure and policy.uncertain == "ignore":
            return (), (ONLY_UNCERTAIN, "uncertain: " + ", ".join(unsure) + " (--uncertain ignore)")
        return (), (NO_POSITIVE, f"uncertain: {', '.join(unsure)} (--uncertain zeros)" if unsure else "")
    if policy.single_label and len(kept) != 1:
        return (), (NOT_SINGLE, f"positive: {', '.join(kept)} (--single-label)")
    return kept, None
