"""Free-text radiology reports for synthcxr.

A report is assembled from a clinical indication, hedged findings, negations,
distractor sentences and an impression, in one of several layouts. The text is
designed to be *complementary* to the image (see :mod:`fedmm.data.synth`):

- pneumonia vs atelectasis look identical on the image (a focal opacity); the
  report's clinical context tells them apart (infection vs post-operative
  hypoventilation), while the findings wording is shared;
- cardiomegaly vs effusion, and no_finding vs nodule, are clear on the image,
  but their reports share the same non-specific context and hedged wording,
  with only weak, noisy hints (a radiologist's "possible blunting", a
  "questionable density, likely nipple shadow") in either direction;
- a fraction of reports carry only a generic indication.

The class name itself is never written as a diagnosis; negations are drawn
only from findings outside the sample's own text-ambiguity group, so they
cannot leak the answer within a group.
"""
from __future__ import annotations

from dataclasses import dataclass

import re

import numpy as np

# Which context pool each class draws its indication from (shared pool = ambiguous text).
CONTEXT_GROUP = {
    "no_finding": "routine", "nodule": "routine",
    "cardiomegaly": "cardiac", "effusion": "cardiac",
    "pneumonia": "infection", "atelectasis": "postop",
    "pneumothorax": "acute",
}
FINDING_GROUP = {
    "no_finding": "routine", "nodule": "routine",
    "cardiomegaly": "cardiac", "effusion": "cardiac",
    "pneumonia": "opacity", "atelectasis": "opacity",
    "pneumothorax": "ptx",
}

CONTEXT = {
    "infection": [
        "fever and productive cough for {days} days", "febrile to {temp} with chills",
        "cough with purulent sputum", "elevated white blood cell count",
        "rigors and malaise since {days} days", "crackles heard at the {side} base",
        "sepsis workup", "leukocytosis and new oxygen requirement",
        "fever, tachypnea and yellow-green sputum", "high temperature and pleuritic cough",
    ],
    "postop": [
        "post-operative day {days} after {surgery}", "shallow breathing, splinting from incisional pain",
        "recently extubated after {surgery}", "bedbound with poor inspiratory effort",
        "decreased breath sounds at the {side} base after {surgery}",
        "on opioid analgesia with weak cough", "immobile since {surgery}, low lung volumes",
        "low-grade temperature on post-operative day {days}", "poor use of incentive spirometer",
    ],
    "cardiac": [
        "shortness of breath", "dyspnea on exertion", "orthopnea", "bilateral leg swelling",
        "known congestive heart failure", "weight gain of {days} kg", "reduced ejection fraction on echo",
        "fatigue and decreased exercise tolerance", "history of hypertension and dyspnea",
        "paroxysmal nocturnal dyspnea", "worsening breathlessness",
    ],
    "routine": [
        "routine pre-operative evaluation", "annual physical examination", "pre-employment screening",
        "follow-up, asymptomatic", "mild cough, rule out acute process", "atypical chest discomfort",
        "long history of smoking", "immigration screening", "baseline study", "health check",
    ],
    "acute": [
        "sudden onset {side}-sided chest pain", "acute shortness of breath after {activity}",
        "pleuritic chest pain of sudden onset", "status post {side} central line placement",
        "blunt chest trauma", "tall thin patient with sudden dyspnea",
        "decreased breath sounds on the {side}", "emphysema with acute breathlessness",
    ],
    "generic": ["chest pain", "cough", "evaluate", "follow-up", "please assess", "shortness of breath",
                "clinical concern", "rule out acute process"],
}

HEDGE = ["", "", "possible ", "probable ", "likely ", "questionable ", "suggestion of ", "subtle "]

FINDINGS = {
    "opacity": [
        "{hedge}patchy opacity in the {side} {zone} zone", "hazy increased density over the {side} {zone} lung",
        "ill-defined airspace opacity, {side} {zone} zone", "{hedge}area of increased attenuation at the {side} {zone}",
        "{side} {zone} zone shadowing",
    ],
    "cardiac_shared": [
        "cardiac silhouette and costophrenic angles are partially obscured",
        "limited assessment of heart size and lung bases due to low lung volumes",
        "cannot exclude {cardio_syn} or {eff_syn}", "mild vascular congestion",
        "heart size and bases difficult to assess on this projection",
        "prominent interstitial markings, fluid overload not excluded",
    ],
    "cardio_hint": ["heart size may be at the upper limit of normal", "{hedge}prominent cardiac silhouette",
                    "cardiac contour appears {hedge}widened"],
    "eff_hint": ["{hedge}blunting of the {side} costophrenic angle", "{hedge}small amount of pleural fluid",
                 "{side} base {hedge}hazy"],
    "routine_shared": ["lungs are clear", "no acute cardiopulmonary abnormality",
                       "lungs are well expanded", "no acute process"],
    "nodule_hint": ["questionable small density in the {side} {zone} zone, possibly nipple shadow",
                    "{hedge}small rounded density, consider repeat with nipple markers",
                    "tiny focus projecting over the {side} lung, likely overlapping structures"],
    "ptx": ["{hedge}lucency along the {side} {ptx_site}", "{hedge}visible pleural line on the {side}",
            "absent lung markings peripherally on the {side}", "skin fold versus pleural edge on the {side}",
            "{hedge}air along the {side} {ptx_site}"],
}
IMPRESSION = {
    "opacity": ["findings may represent infection or volume loss in the appropriate clinical context",
                "consolidation versus atelectasis; correlate clinically", "correlate with clinical findings",
                "follow-up radiograph recommended after treatment", "opacity as described"],
    "cardiac": ["recommend correlation with echocardiography", "consider lateral view",
                "findings nonspecific; clinical correlation advised", "no acute change"],
    "routine": ["no acute cardiopulmonary process", "normal study", "no active disease",
                "clinical correlation as needed"],
    "ptx": ["findings reported to the clinical team", "recommend expiratory or repeat film",
            "urgent clinical correlation advised"],
}
NEGATION = {
    "effusion": ["no pleural effusion", "no effusion", "costophrenic angles are sharp", "no pleural fluid"],
    "pneumothorax": ["no pneumothorax", "no pleural air", "no pneumothorax is seen"],
    "consolidation": ["no focal consolidation", "no airspace disease", "no focal opacity"],
    "cardiomegaly": ["heart size is normal", "normal cardiac silhouette", "no cardiomegaly"],
    "nodule": ["no suspicious nodule", "no mass or nodule", "no pulmonary nodules"],
}
ALLOWED_NEGATIONS = {
    "routine": ["effusion", "pneumothorax", "consolidation", "cardiomegaly"],
    "cardiac": ["pneumothorax", "consolidation", "nodule"],
    "opacity": ["effusion", "pneumothorax", "cardiomegaly", "nodule"],
    "ptx": ["effusion", "consolidation", "cardiomegaly", "nodule"],
}
DISTRACTORS = [
    "degenerative changes of the thoracic spine", "old healed {side} rib fracture",
    "surgical clips in the upper abdomen", "comparison made with prior study from {month}",
    "osseous structures are unremarkable", "mild tortuosity of the aorta", "limited by patient motion",
    "trachea is midline", "soft tissues unremarkable", "calcified granuloma unchanged",
]
DEVICE_SENTENCES = {
    "electrodes": ["monitoring leads overlie the chest", "ecg electrodes project over the thorax"],
    "tube": ["enteric tube courses below the diaphragm", "support line in place"],
    "rotated": ["patient is mildly rotated", "rotated positioning limits assessment"],
}
SYNONYMS = {"cardio_syn": ["cardiomegaly", "cardiac enlargement"],
            "eff_syn": ["small effusion", "pleural fluid"]}
FILL = {
    "surgery": ["abdominal surgery", "hip replacement", "cholecystectomy", "bowel resection",
                "cardiac bypass surgery", "spinal fusion"],
    "activity": ["lifting", "coughing", "exercise", "a long flight"],
    "month": ["january", "march", "may", "july", "september", "november"],
}
AGE_RANGE = {"no_finding": (20, 80), "nodule": (45, 85), "cardiomegaly": (55, 92), "effusion": (50, 92),
             "pneumonia": (18, 90), "atelectasis": (30, 88), "pneumothorax": (17, 50)}
_FIELD = re.compile(r"\{(\w+)\}")
P_GENERIC_CONTEXT = 0.15   # reports whose indication says nothing class-specific
P_HINT_TRUE, P_HINT_FALSE = 0.30, 0.12  # weak hints inside text-ambiguous pairs


@dataclass
class ReportFacts:
    """What the image shows, so the report can mention consistent side/zone/devices."""

    label: str
    side: str = "right"       # patient side of the main finding
    zone: str = "lower"
    electrodes: bool = False
    tube: bool = False
    rotated: bool = False


class _Writer:
    """Fills templates for one report from a numpy Generator."""

    def __init__(self, rng: np.random.Generator, facts: ReportFacts) -> None:
        self.rng, self.facts = rng, facts

    def pick(self, items: list[str]) -> str:
        return items[int(self.rng.integers(len(items)))]

    def value(self, key: str) -> str:
        rng, f = self.rng, self.facts
        if key in ("side", "zone"):
            return getattr(f, key)
        if key == "hedge":
            return self.pick(HEDGE)
        if key == "days":
            return str(int(rng.integers(1, 8)))
        if key == "temp":
            return f"{rng.uniform(38.2, 40.1):.1f}C"
        if key == "ptx_site":
            return self.pick(["apex", "lateral chest wall", "upper zone"])
        return self.pick({**SYNONYMS, **FILL}[key])

    def fill(self, template: str) -> str:
        """Replace each ``{field}`` in ``template`` (values drawn in order of appearance)."""
        return _FIELD.sub(lambda m: self.value(m.group(1)), template)

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)


def _findings(w: _Writer, label: str) -> tuple[list[str], str]:
    group = FINDING_GROUP[label]
    out: list[str] = []
    if group == "opacity":
        out.append(w.fill(w.pick(FINDINGS["opacity"])))
    elif group == "ptx":
        out.append(w.fill(w.pick(FINDINGS["ptx"])))
    elif group == "cardiac":
        out.append(w.fill(w.pick(FINDINGS["cardiac_shared"])))
        if w.chance(P_HINT_TRUE if label == "cardiomegaly" else P_HINT_FALSE):
            out.append(w.fill(w.pick(FINDINGS["cardio_hint"])))
        if w.chance(P_HINT_TRUE if label == "effusion" else P_HINT_FALSE):
            out.append(w.fill(w.pick(FINDINGS["eff_hint"])))
    else:
        if w.chance(0.75):
            out.append(w.pick(FINDINGS["routine_shared"]))
        if w.chance(P_HINT_TRUE if label == "nodule" else P_HINT_FALSE * 0.5):
            out.append(w.fill(w.pick(FINDINGS["nodule_hint"])))
    impression_group = "ptx" if group == "ptx" else ("routine" if group == "routine" else group)
    return out, w.fill(w.pick(IMPRESSION[impression_group]))


def _sentence(s: str) -> str:
    s = s.strip()
    return s[:1].upper() + s[1:] + "." if s else ""


def make_report(rng: np.random.Generator, facts: ReportFacts) -> str:
    """Write one free-text report for ``facts`` (deterministic given ``rng``'s state)."""
    w = _Writer(rng, facts)
    label = facts.label
    pool = "generic" if w.chance(P_GENERIC_CONTEXT) else CONTEXT_GROUP[label]
    n_ctx = 1 + int(w.chance(0.4)) if pool != "generic" else 1
    ctx_items = rng.choice(len(CONTEXT[pool]), size=min(n_ctx, len(CONTEXT[pool])), replace=False)
    context = ", ".join(w.fill(CONTEXT[pool][i]) for i in ctx_items)

    findings, impression = _findings(w, label)
    allowed = ALLOWED_NEGATIONS[FINDING_GROUP[label]]
    n_neg = int(rng.integers(0, 4))
    negs = [w.pick(NEGATION[allowed[i]])
            for i in rng.choice(len(allowed), size=min(n_neg, len(allowed)), replace=False)]
    extras = [w.fill(DISTRACTORS[i]) for i in rng.choice(len(DISTRACTORS), size=int(rng.integers(0, 3)),
                                                         replace=False)]
    for key, present in (("electrodes", facts.electrodes), ("tube", facts.tube), ("rotated", facts.rotated)):
        if present and w.chance(0.6):
            extras.append(w.pick(DEVICE_SENTENCES[key]))
    body = findings + negs + extras
    order = rng.permutation(len(body))
    body = [body[i] for i in order]

    lo, hi = AGE_RANGE[label]
    age, sex = int(rng.integers(lo, hi + 1)), w.pick(["man", "woman", "male", "female", "patient"])
    layout = int(rng.integers(4))
    sentences = " ".join(_sentence(s) for s in body)
    if layout == 0:
        text = f"INDICATION: {_sentence(context)} FINDINGS: {sentences} IMPRESSION: {_sentence(impression)}"
    elif layout == 1:
        text = f"{_sentence(f'{age}-year-old {sex} with {context}')} {sentences} {_sentence(impression)}"
    elif layout == 2:
        text = f"Clinical history: {_sentence(context)} Report: {sentences} Conclusion: {_sentence(impression)}"
    else:
        text = f"{_sentence(f'{context}; age {age}')} {sentences}"
    return " ".join(text.split())
