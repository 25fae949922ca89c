"""The workspace store: runs, step runs, metrics, datasets, committed results, published
pipelines, schedules, their firings and scheduler heartbeats, notification targets
and deliveries, settings, sweeps. Every table's reads and
writes are here; the schema and its migrations are in ``workspace``."""

from __future__ import annotations

from functools import cached_property
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_jupyter.store.workspace import Workspace

if TYPE_CHECKING:
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

# Each store's module is imported when first used: a command needs a few of the eleven
# (a run: runs, datasets, environments, results, notification settings), and importing
# them all took ~25 ms more of every command. ``from mlpipe_jupyter.store import RunRecord``
# still works.
_MODULE_OF = {
    "DatasetStore": "datasets", "DatasetVersion": "datasets",
    "EnvironmentStore": "environments",
    "Firing": "firings", "FiringStore": "firings",
    "NotifyStore": "notify", "SettingsStore": "notify",
    "PublishedPipeline": "published", "PublishedStore": "published",
    "ResultStore": "results",
    "PlannedStep": "runs", "RunRecord": "runs", "RunStore": "runs", "StepRunRecord": "runs",
    "SchedulerLease": "schedulers", "SchedulerStore": "schedulers",
    "ScheduleRecord": "schedules", "ScheduleStore": "schedules",
    "SweepMember": "sweeps", "SweepRecord": "sweeps", "SweepStore": "sweeps",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)


class Store:
    """One workspace's stores, opened together."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    @classmethod
    def open(cls, start: Path | None = None, create: bool = False) -> Store:
        return cls(Workspace.find(start, create=create))

    @cached_property
    def runs(self) -> RunStore:
        from mlpipe_jupyter.store.runs import RunStore

        return RunStore(self.workspace)

    @cached_property
    def datasets(self) -> DatasetStore:
        from mlpipe_jupyter.store.datasets import DatasetStore

        return DatasetStore(self.workspace)

    @cached_property
    def environments(self) -> EnvironmentStore:
        from mlpipe_jupyter.store.environments import EnvironmentStore

        return EnvironmentStore(self.workspace)

    @cached_property
    def results(self) -> ResultStore:
        from mlpipe_jupyter.store.results import ResultStore

        return ResultStore(self.workspace)

    @cached_property
    def published(self) -> PublishedStore:
        from mlpipe_jupyter.store.published import PublishedStore

        return PublishedStore(self.workspace)

    @cached_property
    def schedules(self) -> ScheduleStore:
        from mlpipe_jupyter.store.schedules import ScheduleStore

        return ScheduleStore(self.workspace)

    @cached_property
    def firings(self) -> FiringStore:
        from mlpipe_jupyter.store.firings import FiringStore

        return FiringStore(self.workspace)

    @cached_property
    def schedulers(self) -> SchedulerStore:
        from mlpipe_jupyter.store.schedulers import SchedulerStore

        return SchedulerStore(self.workspace)

    @cached_property
    def sweeps(self) -> SweepStore:
        from mlpipe_jupyter.store.sweeps import SweepStore

        return SweepStore(self.workspace)

    @cached_property
    def notify(self) -> NotifyStore:
        from mlpipe_jupyter.store.notify import NotifyStore

        return NotifyStore(self.workspace)

    @cached_property
    def settings(self) -> SettingsStore:
        from mlpipe_jupyter.store.notify import SettingsStore

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
