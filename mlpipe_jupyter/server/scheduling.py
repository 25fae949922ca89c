"""Published pipelines and schedules, as the REST API of one Jupyter server sees them:
list, publish, trigger; create, replace (edit), pause, resume and delete schedules."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import (
    SCHEDULE,
    ConflictError,
    DefinitionIssue,
    MlpipeError,
    NotFoundError,
    PublishedPipelineNotFoundError,
    ScheduleDefinitionError,
    error_for_issues,
)
from mlpipe_jupyter.model.notify import parse_spec
from mlpipe_jupyter.model.schedule_policies import SKIP, parse_schedule_duration
from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.model.sweep import SweepSpec
from mlpipe_jupyter.model.values import parameter_texts
from mlpipe_jupyter.scheduling import publishing, schedules
from mlpipe_jupyter.scheduling.publishing import PublishedPipeline
from mlpipe_jupyter.scheduling.triggering import prepare_run, start_run, started_status
from mlpipe_jupyter.server.payloads import json_safe, published_entry
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.notify import SCHEDULE as NOTIFY_SCHEDULE
from mlpipe_jupyter.store.sweeps import is_sweep_id
from mlpipe_jupyter.validation import validate_schedule


@dataclass(frozen=True)
class ScheduleRequest:
    """A schedule as a REST request gives it (``POST schedules``, ``PUT schedules/{name}``):
    durations as texts (``15m``, ``1h30m``) or seconds, parameters as ``-p`` texts or JSON
    values, ``notify`` the new specs and ``keep_notify`` the ids of targets (of the
    schedule being replaced) that stay: specs are never sent back to the browser, since
    they may hold credentials."""

    pipeline: str
    name: str | None = None
    version: int | None = None
    cron: str | None = None
    timezone: str = "UTC"
    every: str | float | None = None
    on_dataset: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    missed: str = SKIP
    overlap: str = SKIP
    retries: int = 0
    retry_backoff: str | float | None = None
    timeout: str | float | None = None
    notify: Sequence[str] = ()
    notify_on: Sequence[str] = ()
    keep_notify: Sequence[int] = ()
    sweep: Sequence[str] = ()  # --sweep texts: each firing starts that sweep
    samples: int | None = None
    seed: int | None = None
    yes: bool = False


def _seconds(value: str | float | None, option: str, issues: list[DefinitionIssue]
             ) -> tuple[float | None, bool]:
    """(seconds, ok) of a duration field; a bad one adds its issue."""
    if value is None or value == "":
        return None, True
    try:
        if isinstance(value, str):
            return parse_schedule_duration(value, option), True
        if value < 1:
            raise ScheduleDefinitionError(f"{option} {value!r}: must be at least 1s")
        return float(value), True
    except ScheduleDefinitionError as exc:
        issues += [DefinitionIssue(i.message, field=i.field, kind=SCHEDULE) for i in exc.issues]
        return None, False


class SchedulingService:
    """Lists, triggers and pauses what the workspace has published and scheduled.

    ``store`` gives the server's store, or None while there is no workspace (then there is
    nothing published or scheduled either); ``store(create=True)`` makes the workspace
    (the first publication does)."""

    def __init__(self, store: Callable[..., Store | None]) -> None:
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

    def publish(self, notebook: Path, name: str, description: str | None = None,
                make_default: bool = True, notify: Sequence[str] | None = None,
                notify_on: Sequence[str] = ()) -> dict[str, Any]:
        """Publish ``notebook`` (checked to lie under the server root by the caller) as the
        next version of ``name``: the version, whether it is new (content equal to the
        latest version creates nothing), and the published pipeline with every version."""
        store = self._existing(create=True)
        assert store is not None
        version, created = publishing.publish(store, notebook, name, description,
                                              make_default=make_default, notify=notify,
                                              notify_on=notify_on)
        return {"created": created, "version": json_safe(version.to_dict()),
                "published": published_entry(name, publishing.list_published(store, name))}

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

    def create_schedule(self, request: ScheduleRequest) -> dict[str, Any]:
        """Check every field (every problem at once), then store the schedule."""
        store = self._store()
        if store is None:
            raise PublishedPipelineNotFoundError(
                f"no published pipeline named {request.pipeline!r} (this server's folder has "
                "no mlpipe workspace)")
        return self._schedule(store, self._create(store, request, request.notify))

    def replace_schedule(self, ref: str, request: ScheduleRequest) -> dict[str, Any]:
        """Edit a schedule: there is no update in place, so the new fields are checked
        first (nothing changes on any problem), then the schedule is deleted and created
        again under the same name (a new id: an every-N grid starts again from now, the
        firings so far stay in the old schedule's history, a running firing finishes).
        Notification targets in ``keep_notify`` (ids of this schedule's) are kept."""
        store = self._store()
        if store is None:
            raise NotFoundError(f"no schedule named {ref!r} (this server's folder has no "
                                "mlpipe workspace)")
        old = self._find_schedule(store, ref)
        targets = {t.id: t.spec for t in store.notify.targets(NOTIFY_SCHEDULE, old.name)}
        unknown = [i for i in request.keep_notify if i not in targets]
        if unknown:
            raise ScheduleDefinitionError.of([DefinitionIssue(
                f"keep_notify: schedule {old.name!r} has no notification target "
                f"{', '.join(map(str, unknown))} (its targets: "
                f"{', '.join(map(str, targets)) or 'none'})", field="--notify", kind=SCHEDULE)])
        notify = [targets[i] for i in request.keep_notify] + list(request.notify)
        name = request.name or old.name
        if name != old.name and any(s.name == name for s in schedules.list_schedules(store)):
            raise ConflictError(f"a schedule named {name!r} exists")
        self._check(store, request, notify, name)
        schedules.delete_schedule(store, old.name)
        return self._schedule(store, self._create(store, request, notify, name))

    def delete_schedule(self, ref: str) -> dict[str, Any]:
        """Delete a schedule: firings that have not started are canceled, a running one
        finishes; answers the schedule as it was."""
        store = self._store()
        if store is None:
            raise NotFoundError(f"no schedule named {ref!r} (this server's folder has no "
                                "mlpipe workspace)")
        found = self._find_schedule(store, ref)
        data = self._schedule(store, found)
        schedules.delete_schedule(store, found.name)
        return data

    def _create(self, store: Store, request: ScheduleRequest, notify: Sequence[str],
                name: str | None = None) -> schedules.Schedule:
        every, timeout, backoff = self._check(store, request, notify, name or request.name)
        return schedules.create_schedule(
            store, request.pipeline, name=name or request.name, version=request.version,
            cron=request.cron, timezone_name=request.timezone, every_seconds=every,
            on_dataset=request.on_dataset, params=parameter_texts(request.parameters),
            missed=request.missed, overlap=request.overlap, max_retries=request.retries,
            retry_backoff=30.0 if backoff is None else backoff, timeout=timeout,
            notify=notify, notify_on=request.notify_on, sweep=request.sweep,
            samples=request.samples, seed=request.seed, yes=request.yes)

    @staticmethod
    def _check(store: Store, request: ScheduleRequest, notify: Sequence[str],
               name: str | None) -> tuple[float | None, float | None, float | None]:
        """The durations in seconds, or every problem of the request at once: the
        durations' with what ``validate_schedule`` finds (run with a stand-in for a bad
        interval, so that the other fields are checked as they would be)."""
        issues: list[DefinitionIssue] = []
        every, every_ok = _seconds(request.every, "--every", issues)
        timeout, timeout_ok = _seconds(request.timeout, "--timeout", issues)
        backoff, backoff_ok = _seconds(request.retry_backoff, "--retry-backoff", issues)
        try:
            validate_schedule(
                store, request.pipeline, request.version, parameter_texts(request.parameters),
                request.on_dataset, notify=notify, notify_on=request.notify_on,
                sweep=request.sweep, samples=request.samples, seed=request.seed,
                yes=request.yes, cron=request.cron, timezone_name=request.timezone,
                every_seconds=every if every_ok else 60.0, missed=request.missed,
                overlap=request.overlap, max_retries=request.retries, name=name)
        except MlpipeError as exc:
            found = list(getattr(exc, "issues", []))
            if not found and not issues:
                raise  # an unknown or disabled published version
            issues += found
        if issues:
            raise error_for_issues(issues)
        return every, timeout, backoff

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
        # where its runs notify: channels as shown everywhere (credentials stripped), with
        # the ids an edit keeps them by
        data["notify"] = [{"id": t.id, "channel": _channel(t.spec), "on": list(t.on)}
                          for t in store.notify.targets(NOTIFY_SCHEDULE, schedule.name)]
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


def _channel(spec: str) -> str:
    parsed, _ = parse_spec(spec)
    return parsed.channel if parsed else "(invalid) " + spec.split(":", 1)[0]
