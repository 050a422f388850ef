"""Exceptions raised by shaping.

    ShapingError                 a run cannot start or must stop; the CLI prints it on one line
    ├── ConfigError              shaping.toml is missing or wrong, a model name is unknown
    ├── PipelineDefinitionError  a Pipeline class is declared wrong (raised at class creation)
    ├── PipelineLoadError        a file under pipelines/ fails to import
    ├── DependencyError          a file_dep is missing or unreadable
    ├── TaskContractError        a task yielded or returned something it must not
    ├── OutputError              the output location cannot be written
    └── RunFailedError           a run ended but failed (auth errors, too many failed records);
                                 the previous outputs are kept, the failure is recorded
    PipelineError                one record failed; it becomes an __ERROR__ record and the run goes on

`PipelineError` is deliberately not a `ShapingError`: it is an outcome recorded per record,
never a reason to stop the run.
"""

from __future__ import annotations


class ShapingError(Exception):
    """A problem that stops a run; its message is one line meant for the user."""


class ConfigError(ShapingError):
    pass


class PipelineDefinitionError(ShapingError):
    pass


class PipelineLoadError(ShapingError):
    pass


class DependencyError(ShapingError):
    pass


class TaskContractError(ShapingError):
    pass


class OutputError(ShapingError):
    pass


class RunFailedError(ShapingError):
    """The run finished but failed: its outputs were not put in place. `result` is the
    `RunResult` (manifest and stats) of the failed run."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class PipelineError(Exception):
    """Raised by a task to fail one record with a named error type.

    >>> raise PipelineError("judge returned no JSON", error_type="parse_error")
    """

    def __init__(self, message: str, error_type: str = "pipeline_error") -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


def describe_validation_error(exc: "pydantic.ValidationError", source: str) -> str:  # noqa: F821
    """One line for a pydantic ValidationError: `source: field.path: what was expected (got X)`.

    Only the first problem is shown, with a count of the others: the user fixes one at a time.
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    got = first.get("input")
    detail = first["msg"]
    if first["type"] not in ("missing",) and not isinstance(got, dict):
        detail += f" (got {got!r:.60})"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{source}: {where}: {detail}{more}"
