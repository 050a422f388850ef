"""shaping: generate LLM training data with pipelines written as plain sequential code.

The public names below are imported when first used, so `import shaping` (and `isf --version`)
costs almost nothing.
"""

from __future__ import annotations

from shaping._lazy import lazy_exports
from shaping._version import __version__

#: public name -> the module that holds it
_EXPORTS = {
    "AnnotatedTrainingSample": "shaping.samples",
    "LLMMessage": "shaping.requests",
    "LLMRequest": "shaping.requests",
    "ModelRequest": "shaping.requests",
    "ModelResponse": "shaping.requests",
    "Pipeline": "shaping.pipeline",
    "PipelineError": "shaping.errors",
    "RunResult": "shaping.runner",
    "ShapingError": "shaping.errors",
    "TrainingSample": "shaping.samples",
    "model_request": "shaping.requests",
    "run_pipeline": "shaping.runner",
}

__all__ = sorted([*_EXPORTS, "__version__"])


__getattr__ = lazy_exports(globals(), _EXPORTS)


def __dir__() -> list[str]:
    return __all__
