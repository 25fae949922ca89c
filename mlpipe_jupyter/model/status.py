"""The states of steps and runs, and what each means."""

from __future__ import annotations

from enum import Enum


class StepStatus(str, Enum):
    """The life of a step within one run.

    queued     planned to execute; waiting for its upstream steps or a free slot
    running    its step notebook is executing
    succeeded  executed in this run; its outputs are committed
    failed     executed and raised, timed out, or its kernel died (after any retries)
    reused     not executed: a committed result with the same fingerprint was reused
    skipped    not executed: an upstream step failed, or the step was not selected
    canceled   the run was canceled before or while the step ran
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REUSED = "reused"
    SKIPPED = "skipped"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self not in (StepStatus.QUEUED, StepStatus.RUNNING)


class RunStatus(str, Enum):
    """The life of a pipeline run.

    running    the runner is working on it
    succeeded  every selected step succeeded or was reused
    failed     at least one step failed
    canceled   canceled by the user, or the runner died (found when a later command looks)
    """

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self is not RunStatus.RUNNING
