"""Names of the modality views, test scenarios and client types, defined once.

A *view* hides modalities from a model (``image_only`` hides the reports); the test
scenarios of ``summary.json`` are the views (docs/ARCHITECTURE.md §7). A *client type* is
what a client's training rows hold (``ClientData.modality``, the partition's client kinds).
"""
from __future__ import annotations

VIEWS = {"full": (True, True), "image_only": (True, False), "text_only": (False, True)}   # view -> (image, text) kept
SCENARIOS = tuple(VIEWS)                                            # test scenarios: one per view
CLIENT_TYPES = ("image_only", "text_only", "multimodal", "mixed")   # summary.json client_types
DATA_MODALITIES = ("both", "image", "text")                          # data.modalities: what the run keeps
