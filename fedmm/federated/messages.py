"""Messages between client and server: named numpy arrays + JSON metadata, never pickled.

A message is a plain dataclass; writing, reading and validating it lives in
:mod:`fedmm.engines.wire` (the algorithm package does no I/O).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedmm.io import MessageError, short_repr

__all__ = ["Message", "MessageError", "short_repr"]


@dataclass
class Message:
    """One message: ``kind`` ("broadcast" | "upload"), named arrays and JSON-able metadata."""

    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
