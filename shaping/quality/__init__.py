"""Checks a person runs before training: the checklist, samples, errors, an HTML report."""

from shaping.quality.checks import Check, Thresholds, errors_by_type, run_checks
from shaping.quality.dataset import Dataset

__all__ = ["Check", "Dataset", "Thresholds", "errors_by_type", "run_checks"]
