"""Published pipelines and schedules, as the REST API of one Jupyter server sees them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlpipe_jupyter.errors import NotFoundError, PublishedPipelineNotFoundError
from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.model.sweep import SweepSpec
from mlpipe_jupyter.scheduling import publishing, schedules
from mlpipe_jupyter.scheduling.publishing import PublishedPipeline
from mlpipe_jupyter.scheduling.triggering import prepare_run, start_run, started_status
from mlpipe_jupyter.server.payloads import json_safe, published_entry
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.sweeps import is_sweep_id


class SchedulingService:
    """Lists, triggers and pauses what the workspace has published and scheduled.

    ``store`` gives the server's store, or None while there is no workspace (then there is
    nothing published or scheduled either)."""

    def __init__(self, store: Callable[[], Store | None]) -> None:
        self._existing = store

    def _store(self) -> Store | None:
        store = self._existing()
        if store is None or not store.workspace.db_path.exists():
            return None
        return store

    def list_published(self) -> dict[str, Any]:
        """Published pipelines, one entry per name with its versions and default version."""
        store = self._store()
        if store is None:
            return {"published": []}
        by_name: dict[str, list[PublishedPipeline]] = {}
        for version in publishing.list_published(store):
            by_name.setdefault(version.name, []).append(version)
        return {"published": [published_entry(n, v) for n, v in by_name.items()]}

    def published(self, name: str) -> dict[str, Any]:
        """One published pipeline: every version, and which one is the default."""
        store = self._store()
        if store is None:
            raise PublishedPipelineNotFoundError(f"no published pipeline named {name!r} "
                                                 "(this server's folder has no mlpipe workspace)")
        return published_entry(name, publishing.list_published(store, name))

    def trigger(self, name: str, version: int | None, parameters: Mapping[str, Any] | None,
                sweep: SweepSpec | None = None, yes: bool = False) -> dict[str, Any]:
        """Start a run of a published pipeline (a detached ``mlpipe run`` process), or a
        sweep of it; returns the run's (or the sweep's) id and the version it runs,
        without waiting for the run to be recorded."""
        store = self._store()
        if store is None:
            raise PublishedPipelineNotFoundError(f"no published pipeline named {name!r} "
                                                 "(this server's folder has no mlpipe workspace)")
        # trigger_published, keeping the version it resolved (the default may change)
        prepared = prepare_run(store, name, version, parameters, sweep=sweep, yes=yes)
        start_run(store, prepared)
        started: dict[str, Any] = {"published": prepared.published.ref,
                                   "version": prepared.published.version}
        if prepared.sweep is None:
            return {"run_id": prepared.run_id, **started}
        return {"sweep_id": prepared.run_id, "status": RunStatus.RUNNING.value,
                "members": prepared.sweep.size(), "run_ids": prepared.member_run_ids,
                **started}

    def list_schedules(self) -> dict[str, Any]:
        """Schedules with their next fire times and the status of their last firing."""
        store = self._store()
        if store is None:
            return {"schedules": []}
        return {"schedules": [self._schedule(store, s) for s in schedules.list_schedules(store)]}

    def schedule(self, ref: str) -> dict[str, Any]:
        store = self._store()
        if store is None:
            raise NotFoundError(f"no schedule named {ref!r} (this server's folder has no "
                                "mlpipe workspace)")
        return self._schedule(store, self._find_schedule(store, ref))

    def set_schedule_paused(self, ref: str, paused: bool) -> dict[str, Any]:
        """Pause or resume a schedule (resuming drops the fire times that passed)."""
        store = self._store()
        if store is None:
            raise NotFoundError(f"no schedule named {ref!r} (this server's folder has no "
                                "mlpipe workspace)")
        found = self._find_schedule(store, ref)
        return self._schedule(store, schedules.set_paused(store, found.name, paused))

    @staticmethod
    def _find_schedule(store: Store, ref: str) -> schedules.Schedule:
        """A schedule by name, else by numeric id."""
        try:
            return schedules.get_schedule(store, ref)
        except NotFoundError:
            if ref.isdigit():
                for candidate in schedules.list_schedules(store):
                    if candidate.id == int(ref):
                        return candidate
            raise

    def _schedule(self, store: Store, schedule: schedules.Schedule) -> dict[str, Any]:
        data = json_safe(schedule.to_dict())
        last = schedules.firings(store, schedule, limit=1)
        data["last_firing"] = None
        if last:
            firing = last[0]
            run_status = None
            if firing.run_id:
                try:
                    run_status = started_status(store, firing.run_id).value
                except NotFoundError:
                    run_status = None
            # a schedule with a sweep starts a sweep per firing: its id is the firing's
            sweep_id = firing.run_id if firing.run_id and is_sweep_id(firing.run_id) else None
            data["last_firing"] = {
                "fire_time": schedules.iso(firing.fire_time), "status": firing.status,
                "run_id": None if sweep_id else firing.run_id, "sweep_id": sweep_id,
                "run_status": run_status, "error": firing.error,
            }
        return data
