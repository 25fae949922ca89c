"""Library errors as REST answers: the status comes from the one table in ``errors.py``.

User mistakes are 4xx and a target that cannot run steps now is 503, each with the
library's own message; anything else is a 500 whose traceback is logged (and not shown
to the client).
"""

from __future__ import annotations

from mlpipe_jupyter.errors import (
    OUTCOMES,
    BadRequestError,
    ForbiddenPathError,
    http_status,
)

# The HTTP half of ``errors.OUTCOMES`` (kept for callers that read the statuses as a table).
STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = tuple(
    (kind, outcome.http_status) for kind, outcome in OUTCOMES
)


def error_body(error: BaseException) -> dict[str, object]:
    """The JSON body of an error answer. Errors that carry issues also list them."""
    status = http_status(error)
    body: dict[str, object] = {
        "status": status,
        "error": type(error).__name__ if status != 500 else "InternalError",
        "message": str(error) if status != 500 else "internal error; see the server log",
    }
    issues = getattr(error, "issues", None)
    if status != 500 and issues:
        body["issues"] = [str(issue) for issue in issues]
    return body


__all__ = ["STATUS_BY_ERROR", "BadRequestError", "ForbiddenPathError", "error_body", "http_status"]
