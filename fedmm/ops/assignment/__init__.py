"""Linear assignment: dispatch in :mod:`.dispatch`, the scipy reference in :mod:`.reference`."""
from fedmm.ops.assignment.dispatch import linear_sum_assignment, linear_sum_assignment_batch

__all__ = ["linear_sum_assignment", "linear_sum_assignment_batch"]
