"""The one exception hierarchy of mlpipe_jupyter.

Every error names what is at fault (the notebook cell, the step, the field, the path) and,
where it helps, what to do about it. Front-ends (CLI, magics, REST) catch ``MlpipeError``
and show ``str(error)``; anything else is a bug and keeps its traceback. ``OUTCOMES`` at the
end is the one table from error class to CLI exit code and HTTP status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# What an issue is about; it decides which error reports it (see ``error_for_issues``).
DEFINITION = "definition"
PARAMETER = "parameter"
SCHEDULE = "schedule"


class MlpipeError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass(frozen=True)
class DefinitionIssue:
    """One problem in a pipeline definition, located as precisely as we can."""

    message: str
    step: str | None = None
    cell: int | None = None  # 1-based cell number in the source notebook
    field: str | None = None  # the option or input at fault, e.g. "--input raw"
    kind: str = DEFINITION  # DEFINITION, PARAMETER or SCHEDULE

    def __str__(self) -> str:
        where = []
        if self.cell is not None:
            where.append(f"cell {self.cell}")
        if self.step:
            where.append(f"step '{self.step}'")
        if self.field:
            where.append(self.field)
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class DefinitionError(MlpipeError):
    """The pipeline definition is invalid. Carries every issue found, not just the first."""

    def __init__(self, issues: list[DefinitionIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        count = len(self.issues)
        noun = "error" if count == 1 else "errors"
        lines = [f"{head}{count} pipeline definition {noun}; nothing was run:"]
        lines += [f"  - {issue}" for issue in self.issues]
        return "\n".join(lines)


class HeaderSyntaxError(MlpipeError):
    """A single ``%%mlstep`` header could not be parsed (used by the magics for one-line errors)."""


def _issue_list(issues: Sequence[DefinitionIssue], what: str, outcome: str) -> str:
    if len(issues) == 1:
        return str(issues[0])
    lines = [f"{len(issues)} {what} errors; {outcome}:"]
    return "\n".join(lines + [f"  - {issue}" for issue in issues])


class ParameterError(MlpipeError):
    """A pipeline parameter given at run time is unknown or has a value of the wrong type."""

    def __init__(self, message: str, issues: Sequence[DefinitionIssue] | None = None) -> None:
        super().__init__(message)
        self.issues = list(issues) if issues is not None else [
            DefinitionIssue(message, kind=PARAMETER)]

    @classmethod
    def of(cls, issues: Sequence[DefinitionIssue]) -> ParameterError:
        return cls(_issue_list(issues, "parameter", "nothing was run"), issues)


class WorkspaceError(MlpipeError):
    """The workspace folder is missing, unreadable or not a workspace."""


class NotFoundError(MlpipeError):
    """A run, step, dataset or result that was asked for does not exist."""


class DatasetError(MlpipeError):
    """A dataset cannot be registered or read."""


class EnvironmentDefinitionError(MlpipeError):
    """An environment definition (name, packages, version) is invalid."""


class ExecutorError(MlpipeError):
    """A compute target is unknown or cannot run steps."""


class TargetUnavailableError(ExecutorError):
    """A compute target cannot be reached now: no Docker engine answers, a Dask scheduler
    or a datastore is unreachable. Not the request's fault; trying again later may work."""


class StepFailedError(MlpipeError):
    """Raised inside the runner for a step that failed; carries the user-facing report."""

    def __init__(self, report: str) -> None:
        super().__init__(report)
        self.report = report


class NotebookError(MlpipeError):
    """A notebook file cannot be read as a Jupyter notebook."""


class ScheduleDefinitionError(MlpipeError):
    """A schedule (cron, time zone, interval, policy, trigger) is invalid; nothing was stored."""

    def __init__(self, message: str, issues: Sequence[DefinitionIssue] | None = None) -> None:
        super().__init__(message)
        self.issues = list(issues) if issues is not None else [
            DefinitionIssue(message, kind=SCHEDULE)]

    @classmethod
    def of(cls, issues: Sequence[DefinitionIssue]) -> ScheduleDefinitionError:
        return cls(_issue_list(issues, "schedule", "nothing was stored"), issues)


class PublishedPipelineNotFoundError(NotFoundError):
    """A published pipeline name or version that does not exist (bad input for a trigger)."""


class ConflictError(MlpipeError):
    """The request conflicts with the current state: cancel a run that has ended, trigger
    a disabled published version, take a name that is taken."""


class BadRequestError(MlpipeError):
    """A REST request itself is malformed: bad JSON, a wrong type, an unknown filter value."""


class ForbiddenPathError(MlpipeError):
    """A path points outside the Jupyter server's root folder."""


class HandoverError(MlpipeError):
    """A variable cannot flow from one step to a later one: it cannot be saved at the end of
    the producer step, or its saved copy cannot be loaded at the start of the consumer.
    Raised inside the step kernels (``handover``), where it fails the step with its message."""


class SecretError(MlpipeError):
    """A secret cannot be found, stored or used. The message names the secret and every
    place looked, never a value (docs/secrets.md)."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


def error_for_issues(issues: Sequence[DefinitionIssue], source: str | None = None) -> MlpipeError:
    """The one error that reports ``issues`` (not empty), all of them.

    Only parameter problems: ParameterError; only schedule problems, or schedule problems
    with others: ScheduleDefinitionError; else DefinitionError. A single problem reads as
    it did when each check raised on its own.
    """
    kinds = {issue.kind for issue in issues}
    if kinds == {PARAMETER}:
        return ParameterError.of(issues)
    if SCHEDULE in kinds:
        return ScheduleDefinitionError.of(issues)
    return DefinitionError(list(issues), source)


# -- the one table: error class -> CLI exit code, HTTP status ------------------------------
EXIT_CANCELED = 130  # the run was canceled (Ctrl-C, SIGTERM): what a shell reports for SIGINT
EXIT_FAILED = 1  # the command could not do what was asked (and the request was well formed)
EXIT_USAGE = 2  # bad input: fix the notebook, the parameters or the command line


@dataclass(frozen=True)
class Outcome:
    """How the front-ends answer one kind of error."""

    exit_code: int
    http_status: int


# Order matters only for subclasses: the first matching row wins. Errors that match no row
# are bugs (or unexpected faults): exit 1 after the message, HTTP 500 with a logged traceback.
OUTCOMES: tuple[tuple[type[BaseException], Outcome], ...] = (
    (BadRequestError, Outcome(EXIT_USAGE, 400)),
    (DefinitionError, Outcome(EXIT_USAGE, 400)),
    (ParameterError, Outcome(EXIT_USAGE, 400)),
    (NotebookError, Outcome(EXIT_USAGE, 400)),
    (HeaderSyntaxError, Outcome(EXIT_USAGE, 400)),
    (ScheduleDefinitionError, Outcome(EXIT_USAGE, 400)),
    (EnvironmentDefinitionError, Outcome(EXIT_USAGE, 400)),
    (SecretError, Outcome(EXIT_USAGE, 400)),  # a missing secret: fix the definition or set it
    (ForbiddenPathError, Outcome(EXIT_USAGE, 403)),
    (PublishedPipelineNotFoundError, Outcome(EXIT_USAGE, 404)),  # a trigger's bad name
    (NotFoundError, Outcome(EXIT_FAILED, 404)),
    (ConflictError, Outcome(EXIT_FAILED, 409)),
    # the compute target cannot run steps now (no Docker engine answers, a Dask scheduler
    # is unreachable, an image does not build): the message says what to do
    (ExecutorError, Outcome(EXIT_FAILED, 503)),
)
UNEXPECTED = Outcome(EXIT_FAILED, 500)


def outcome_of(error: BaseException) -> Outcome:
    """The exit code and HTTP status for ``error``."""
    for kind, outcome in OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return UNEXPECTED


def exit_code(error: BaseException) -> int:
    return outcome_of(error).exit_code


def http_status(error: BaseException) -> int:
    return outcome_of(error).http_status
