"""The one vocabulary of why something failed: a request (`ResponseError.type`), an answer that
is not usable as it stands (its outcome), a record (`PipelineError.error_type`, the `error` of
an error record). Each type says whether trying again may help by default; a provider may say
otherwise for one failure (a body too large is `bad_response`, and the same next time).

The members are strings (StrEnum): they compare equal to their values, and error records,
manifests and `quality` settings hold the plain strings. A pipeline may raise `PipelineError`
with a type of its own (`"too_many_tool_rounds"`); those are strings too.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    # the request (HTTP status, transport, the provider)
    AUTH = "auth_error"                      # 401: every later request fails the same way
    PERMISSION = "permission_error"          # 403
    BAD_REQUEST = "bad_request"              # 400, 413, 422
    NOT_FOUND = "not_found"                  # 404: a wrong base_url or model id
    CLIENT_ERROR = "client_error"            # another 4xx
    RATE_LIMITED = "rate_limited"            # 429
    TIMEOUT = "timeout"                      # 408, no answer within timeout_s
    CONFLICT = "conflict"                    # 409
    SERVER_ERROR = "server_error"            # 5xx
    CONNECTION = "connection_error"          # refused, reset, closed early, a malformed HTTP answer
    TLS = "tls_error"                        # a certificate not trusted
    BAD_RESPONSE = "bad_response"            # a body that is not the API's shape
    INCOMPLETE = "incomplete_response"       # an unknown finish_reason ("error", "abort")
    UNSUPPORTED = "unsupported_request"      # what the provider cannot express: never sent
    PROVIDER = "provider_error"              # a provider's (or its library's) own exception
    # batches
    BATCH_FAILED = "batch_failed"
    BATCH_EXPIRED = "batch_expired"
    BATCH_CANCELLED = "batch_cancelled"
    BATCH_MISSING = "batch_missing"
    # the answer: what `get_text()` refuses unless the request allowed it
    REFUSAL = "refusal"
    CONTENT_FILTER = "content_filter"
    TRUNCATED = "truncated"
    EMPTY = "empty"
    # the record
    VALIDATION = "validation_error"          # structured output still invalid after its repairs
    PARSE = "parse_error"
    NO_SAMPLE = "no_sample"                  # the task returned nothing
    UNEXPECTED = "unexpected_error"          # an exception in the task (the traceback is kept)
    MOCK = "mock_error"                      # the mock's failure on request (fail_when_contains)

    @property
    def retryable(self) -> bool:
        """Whether another try may succeed, unless the failure itself says otherwise."""
        return self in RETRYABLE


RETRYABLE = frozenset({
    ErrorType.RATE_LIMITED, ErrorType.TIMEOUT, ErrorType.CONFLICT, ErrorType.SERVER_ERROR,
    ErrorType.CONNECTION, ErrorType.BAD_RESPONSE, ErrorType.INCOMPLETE, ErrorType.BATCH_EXPIRED,
    ErrorType.BATCH_MISSING,
})

#: the answer's outcomes: what `model_request(..., allow=...)` may allow
OUTCOMES = frozenset({ErrorType.REFUSAL, ErrorType.CONTENT_FILTER, ErrorType.TRUNCATED, ErrorType.EMPTY})

#: types that fail a run outright: every later request would fail the same way
AUTH_ERRORS = frozenset({ErrorType.AUTH, ErrorType.PERMISSION})
