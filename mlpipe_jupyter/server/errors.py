"""The one table that turns library errors into HTTP statuses for the REST API.

User mistakes are 4xx with the library's own message; anything else is a 500 whose
traceback is logged (and not shown to the client).
"""

from __future__ import annotations

from mlpipe_jupyter.errors import (
    ConflictError,
    DefinitionError,
    HeaderSyntaxError,
    MlpipeError,
    NotebookError,
    NotFoundError,
    ParameterError,
    ScheduleDefinitionError,
)


class BadRequestError(MlpipeError):
    """The request itself is malformed: bad JSON, a wrong type, an unknown filter value."""


class ForbiddenPathError(MlpipeError):
    """A path points outside the Jupyter server's root folder."""


# Order matters only for subclasses; the first matching row wins.
STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (BadRequestError, 400),
    (DefinitionError, 400),
    (ParameterError, 400),
    (NotebookError, 400),
    (HeaderSyntaxError, 400),
    (ScheduleDefinitionError, 400),
    (ForbiddenPathError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
)


def http_status(error: BaseException) -> int:
    """The HTTP status for ``error``: 4xx for the mistakes above, else 500."""
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 500


def error_body(error: BaseException) -> dict[str, object]:
    """The JSON body of an error answer. Definition errors also list their issues."""
    status = http_status(error)
    body: dict[str, object] = {
        "status": status,
        "error": type(error).__name__ if status != 500 else "InternalError",
        "message": str(error) if status != 500 else "internal error; see the server log",
    }
    if isinstance(error, DefinitionError):
        body["issues"] = [str(issue) for issue in error.issues]
    return body
