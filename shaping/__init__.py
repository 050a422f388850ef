"""shaping: generate LLM training data with pipelines written as plain sequential code."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("shaping")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

from shaping.errors import PipelineError, ShapingError  # noqa: E402
from shaping.pipeline import Pipeline  # noqa: E402
from shaping.requests import LLMMessage, LLMRequest, ModelRequest, ModelResponse, model_request  # noqa: E402
from shaping.runner import RunResult, run_pipeline  # noqa: E402
from shaping.samples import AnnotatedTrainingSample, TrainingSample  # noqa: E402


__all__ = [
    "AnnotatedTrainingSample",
    "LLMMessage",
    "LLMRequest",
    "ModelRequest",
    "ModelResponse",
    "Pipeline",
    "PipelineError",
    "RunResult",
    "ShapingError",
    "TrainingSample",
    "__version__",
    "model_request",
    "run_pipeline",
]
