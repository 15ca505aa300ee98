"""Weighted / robust aggregation: dispatch in :mod:`.dispatch`, the numpy reference in :mod:`.reference`."""
from fedmm.ops.aggregation.dispatch import METHODS, aggregate, krum_scores

__all__ = ["METHODS", "aggregate", "krum_scores"]
