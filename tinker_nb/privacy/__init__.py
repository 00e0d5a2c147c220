"""Privacy state (torch-free): the per-data-set odometer and the accountant that owns a client's budget.

See docs/DP.md for the unit of privacy, what composes and what is reported.
"""

from __future__ import annotations

from .accountant import PrivacyAccountant, StepCharge
from .odometer import CALLER_POOL, Composition, PrivacyOdometer, dataset_pool

__all__ = ["CALLER_POOL", "Composition", "PrivacyAccountant", "PrivacyOdometer", "StepCharge", "dataset_pool"]
