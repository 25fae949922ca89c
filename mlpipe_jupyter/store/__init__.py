"""The workspace store: runs, step runs, metrics, datasets, committed results, published
pipelines, schedules, their firings and scheduler heartbeats, notification targets
and deliveries, settings, sweeps. Every table's reads and
writes are here; the schema and its migrations are in ``workspace``."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from mlpipe_jupyter.store.datasets import DatasetStore, DatasetVersion
from mlpipe_jupyter.store.environments import EnvironmentStore
from mlpipe_jupyter.store.firings import Firing, FiringStore
from mlpipe_jupyter.store.notify import NotifyStore, SettingsStore
from mlpipe_jupyter.store.published import PublishedPipeline, PublishedStore
from mlpipe_jupyter.store.results import ResultStore
from mlpipe_jupyter.store.runs import PlannedStep, RunRecord, RunStore, StepRunRecord
from mlpipe_jupyter.store.schedulers import SchedulerLease, SchedulerStore
from mlpipe_jupyter.store.schedules import ScheduleRecord, ScheduleStore
from mlpipe_jupyter.store.sweeps import SweepMember, SweepRecord, SweepStore
from mlpipe_jupyter.store.workspace import Workspace


class Store:
    """One workspace's stores, opened together."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    @classmethod
    def open(cls, start: Path | None = None, create: bool = False) -> Store:
        return cls(Workspace.find(start, create=create))

    @cached_property
    def runs(self) -> RunStore:
        return RunStore(self.workspace)

    @cached_property
    def datasets(self) -> DatasetStore:
        return DatasetStore(self.workspace)

    @cached_property
    def environments(self) -> EnvironmentStore:
        return EnvironmentStore(self.workspace)

    @cached_property
    def results(self) -> ResultStore:
        return ResultStore(self.workspace)

    @cached_property
    def published(self) -> PublishedStore:
        return PublishedStore(self.workspace)

    @cached_property
    def schedules(self) -> ScheduleStore:
        return ScheduleStore(self.workspace)

    @cached_property
    def firings(self) -> FiringStore:
        return FiringStore(self.workspace)

    @cached_property
    def schedulers(self) -> SchedulerStore:
        return SchedulerStore(self.workspace)

    @cached_property
    def sweeps(self) -> SweepStore:
        return SweepStore(self.workspace)

    @cached_property
    def notify(self) -> NotifyStore:
        return NotifyStore(self.workspace)

    @cached_property
    def settings(self) -> SettingsStore:
        return SettingsStore(self.workspace)

    def close(self) -> None:
        self.workspace.close()


__all__ = [
    "DatasetStore",
    "DatasetVersion",
    "EnvironmentStore",
    "Firing",
    "FiringStore",
    "NotifyStore",
    "PlannedStep",
    "PublishedPipeline",
    "PublishedStore",
    "ResultStore",
    "RunRecord",
    "RunStore",
    "ScheduleRecord",
    "ScheduleStore",
    "SchedulerLease",
    "SchedulerStore",
    "SettingsStore",
    "StepRunRecord",
    "Store",
    "SweepMember",
    "SweepRecord",
    "SweepStore",
    "Workspace",
]
