"""Checks a person runs before training: the checklist, samples, errors, an HTML report."""

from shaping._lazy import lazy_exports

__all__ = ["Check", "Dataset", "Thresholds", "Turn", "counts", "errors_by_type", "run_checks"]
__getattr__ = lazy_exports(globals(), {
    "Check": "shaping.quality.checks", "Thresholds": "shaping.quality.checks", "counts": "shaping.quality.checks",
    "errors_by_type": "shaping.quality.checks", "run_checks": "shaping.quality.checks",
    "Dataset": "shaping.quality.dataset", "Turn": "shaping.quality.turns"})
