"""The one exception hierarchy of mlpipe_jupyter.

Every error names what is at fault (the notebook cell, the step, the field, the path) and,
where it helps, what to do about it. Front-ends (CLI, magics, REST) catch ``MlpipeError``
and show ``str(error)``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class MlpipeError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass(frozen=True)
class DefinitionIssue:
    """One problem in a pipeline definition, located as precisely as we can."""

    message: str
    step: str | None = None
    cell: int | None = None  # 1-based cell number in the source notebook
    field: str | None = None  # the option or input at fault, e.g. "--input raw"

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


class ParameterError(MlpipeError):
    """A pipeline parameter given at run time is unknown or has a value of the wrong type."""


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


class StepFailedError(MlpipeError):
    """Raised inside the runner for a step that failed; carries the user-facing report."""

    def __init__(self, report: str) -> None:
        super().__init__(report)
        self.report = report


class NotebookError(MlpipeError):
    """A notebook file cannot be read as a Jupyter notebook."""


class ScheduleDefinitionError(MlpipeError):
    """A schedule (cron, time zone, interval, policy, trigger) is invalid; nothing was stored."""


class PublishedPipelineNotFoundError(NotFoundError):
    """A published pipeline name or version that does not exist (bad input for a trigger)."""


class ConflictError(MlpipeError):
    """The request conflicts with the current state: cancel a run that has ended, trigger
    a disabled published version, take a name that is taken."""
