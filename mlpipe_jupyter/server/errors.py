"""Library errors as REST answers: the status comes from the one table in ``errors.py``.

User mistakes are 4xx and a target that cannot run steps now is 503, each with the
library's own message; anything else is a 500 whose traceback is logged (and not shown
to the client).
"""

from __future__ import annotations

import re

from mlpipe_jupyter.errors import (
    OUTCOMES,
    PARAMETER,
    BadRequestError,
    DefinitionIssue,
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
        # the same issues, each with the request field it is about (a form shows it there)
        body["details"] = [{"message": str(issue), "field": issue_field(issue)}
                           for issue in issues]
    return body


# A CLI option (as issues name them) -> the REST request field that carries it.
_OPTION_FIELDS = {
    "--name": "name", "--cron": "cron", "--timezone": "timezone", "--every": "every",
    "--on-dataset": "on_dataset", "--missed": "missed", "--overlap": "overlap",
    "--retries": "retries", "--retry-backoff": "retry_backoff", "--timeout": "timeout",
    "--notify": "notify", "--notify-on": "notify_on", "--sweep": "sweep",
    "--samples": "sweep", "--seed": "sweep", "--version": "version",
}
_LEADING_OPTION = re.compile(r"(--[a-z][a-z-]*)\b")
_PARAMETER = re.compile(r"parameter '([^']+)'")


def issue_field(issue: DefinitionIssue) -> str | None:
    """The request field an issue is about, or None (the notebook, the pipeline as a whole).

    ``parameters.NAME`` for one parameter's value, ``parameters`` for the parameters as a
    whole (an unknown name); the other fields by the CLI option the issue names (its
    ``field``, else the option its message starts with: "--missed 'x': ..."; a cron
    expression's issues start with "cron '...'"); ``trigger`` when the trigger (cron, every
    or dataset) is missing or ambiguous."""
    if isinstance(issue, DefinitionIssue):
        option = (issue.field or "").split(" ")[0]
        message = issue.message
        kind = issue.kind
    else:  # not a DefinitionIssue: read what its text says
        option, message, kind = "", str(issue), None
    if option in _OPTION_FIELDS and option != "--sweep":
        return _OPTION_FIELDS[option]
    if kind == PARAMETER and option != "--sweep":
        named = _PARAMETER.search(message)
        return f"parameters.{named.group(1)}" if named else "parameters"
    if option == "--sweep":
        return "sweep"
    if message.startswith("cron "):
        return "cron"
    if message.startswith("give exactly one of"):
        return "trigger"
    leading = _LEADING_OPTION.match(message)
    if leading and leading.group(1) in _OPTION_FIELDS:
        return _OPTION_FIELDS[leading.group(1)]
    return None


__all__ = ["STATUS_BY_ERROR", "BadRequestError", "ForbiddenPathError", "error_body", "http_status",
           "issue_field"]
