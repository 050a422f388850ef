"""Checks a person runs before training: the checklist, samples, errors, an HTML report."""

from shaping.quality.checks import Check, Thresholds, counts, errors_by_type, run_checks
from shaping.quality.dataset import Dataset
from shaping.quality.turns import Turn

__all__ = ["Check", "Dataset", "Thresholds", "Turn", "counts", "errors_by_type", "run_checks"]
