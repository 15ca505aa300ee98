"""Radiology report sections: find FINDINGS / IMPRESSION and compose the manifest text.

MIMIC-CXR free-text reports mark sections with an upper-case heading and a colon
at the start of a line (``FINDINGS:``, ``IMPRESSION:``, ``INDICATION:``, ...);
Open-i reports have them as ``<AbstractText Label="FINDINGS">``. A heading that
names findings (``FINDINGS``, ``FINDINGS AND IMPRESSION``) fills the findings
section; ``IMPRESSION`` or ``CONCLUSION`` the impression. The text written to
the manifest is ``FINDINGS: ... IMPRESSION: ...`` (sections chosen with
``--sections``), whitespace collapsed; empty when no chosen section is there.
"""
from __future__ import annotations

import re
from typing import Mapping

SECTIONS = ("findings", "impression")
_HEADING = re.compile(r"^[ \t]*([A-Z][A-Z /&()-]{0,48}[A-Z)])[ \t]*:", re.MULTILINE)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def parse_sections(sections: str | None) -> tuple[str, ...]:
    """``--sections`` (comma-separated, of findings / impression) as a tuple; ``ValueError`` otherwise."""
    names = tuple(dict.fromkeys(p.strip().lower() for p in (sections or ",".join(SECTIONS)).split(",") if p.strip()))
    bad = [n for n in names if n not in SECTIONS]
    if bad or not names:
        raise ValueError(f"sections {sections!r}: use a comma-separated list of {', '.join(SECTIONS)}")
    return names


def split_sections(report: str) -> dict[str, str]:
    """Headed sections of a free-text report: ``{HEADING: body}`` (first occurrence of each heading)."""
    out: dict[str, str] = {}
    matches = list(_HEADING.finditer(report))
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(report)
        heading = _collapse(m.group(1))
        out.setdefault(heading, _collapse(report[m.end():end]))
    return out


def findings_impression(sections: Mapping[str, str]) -> dict[str, str]:
    """``{"findings": ..., "impression": ...}`` from headed sections (missing ones left out)."""
    out: dict[str, str] = {}
    for heading, body in sections.items():
        head = heading.upper()
        if not body:
            continue
        if "FINDING" in head:
            out.setdefault("findings", body)
        elif "IMPRESSION" in head or "CONCLUSION" in head:
            out.setdefault("impression", body)
    return out


def compose_text(parts: Mapping[str, str], sections: tuple[str, ...] = SECTIONS) -> str:
    """The manifest text: the chosen sections as ``FINDINGS: ... IMPRESSION: ...`` ('' if none)."""
    chunks = [f"{name.upper()}: {_collapse(parts[name])}" for name in sections if parts.get(name, "").strip()]
    return " ".join(chunks)


def report_text(report: str, sections: tuple[str, ...] = SECTIONS) -> str:
    """Findings/impression text of a free-text (MIMIC-CXR style) report."""
    return compose_text(findings_impression(split_sections(report)), sections)
