"""Checking a request before anything is written: one pass, every problem at once.

Each ``*_issues`` function checks one concern and returns the problems it finds as
``DefinitionIssue``s (never raises for them). The ``validate_*`` entry points — one per
request a user can make: run, publish, trigger, schedule — gather every issue of their
request and raise ONE error carrying all of them (``errors.error_for_issues``) before the
caller writes anything: no run record, no staging folder, no snapshot, no schedule row.

This module sits above ``model`` (pure definitions), ``store`` (datasets, environments,
compute targets) and the executor registry, and below ``runner`` and ``scheduling``, which
call it. The model's own checks (``Pipeline.definition_issues``, ``parameter_issues``) are
pure and stay in the model; this module adds what needs the workspace or the file system.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import (
    DEFINITION,
    SCHEDULE,
    ConflictError,
    DefinitionIssue,
    MlpipeError,
    ScheduleDefinitionError,
    error_for_issues,
)
from mlpipe_jupyter.executors.registry import (
    DEFAULT_COMPUTE,
    check_compute_name,
    executor_class_name,
)
from mlpipe_jupyter.model.grammar import DATASET_NAME
from mlpipe_jupyter.model.notify import APPRISE, parse_on, parse_spec
from mlpipe_jupyter.model.parameters import parameter_issues
from mlpipe_jupyter.model.pipeline import Pipeline
from mlpipe_jupyter.model.step import Step
from mlpipe_jupyter.model.sweep import (
    SweepSpec,
    SweepSyntaxError,
    requested_sweep,
    sweep_issues,
)
from mlpipe_jupyter.notebook import pipeline_from_notebook, read_notebook
from mlpipe_jupyter.notifications import apprise_problem
from mlpipe_jupyter.store import PublishedPipeline, Store
from mlpipe_jupyter.store.compute import ComputeTargets
from mlpipe_jupyter.store.environments import parse_env_ref
from mlpipe_jupyter.store.secrets import SecretStore, missing_message


# -- the workspace as the checks see it ----------------------------------------------------
def known_datasets(store: Store | None) -> dict[str, list[int]]:
    """Dataset name -> versions; empty when there is no workspace (nothing is registered)."""
    if store is None or not store.workspace.db_path.exists():
        return {}
    return store.datasets.versions()


def known_environments(store: Store | None) -> dict[str, list[int]]:
    """Environment name -> versions; empty when there is no workspace."""
    if store is None or not store.workspace.db_path.exists():
        return {}
    return {name: [v.version for v in store.environments.history(name)]
            for name in store.environments.names()}


# -- one function per concern ----------------------------------------------------------------
def local_modules(code: str, folder: Path) -> list[Path]:
    """Python files next to the notebook that ``code`` imports (``import helpers``): part
    of the step's fingerprint (runner.planning), and code whose logged metrics count as the
    step's (``module_code``)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []  # cell magics and shell escapes: nothing we can see
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    found: list[Path] = []
    for name in sorted(names):
        module = folder / f"{name}.py"
        package = folder / name
        if module.is_file():
            found.append(module)
        elif (package / "__init__.py").is_file():
            found.extend(sorted(package.rglob("*.py")))
    return found



def module_code(pipeline: Pipeline, folder: Path) -> dict[str, list[str]]:
    """Step -> the text of the local modules it imports, for the steps whose metrics a
    ``--if`` condition reads (the metrics a helper module logs count as the step's)."""
    read = {other for s in pipeline.steps if s.header.condition
            for other in s.header.condition.steps if pipeline.has_step(other)}
    found: dict[str, list[str]] = {}
    for name in sorted(read):
        codes = [pipeline.step(name).code, *(s.code for s in pipeline.setup)]
        paths = {path for code in codes for path in local_modules(code, folder)}
        texts = []
        for path in sorted(paths):
            try:
                texts.append(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                texts.append("(unreadable)")  # not Python: counted as logging anything
        if texts:
            found[name] = texts
    return found


def name_issues(name: str, what: str = "published pipeline",
                field: str = "--name") -> list[DefinitionIssue]:
    """A published pipeline's or a schedule's name: letters, digits, '_', '-', '.'."""
    if DATASET_NAME.match(name):
        return []
    return [DefinitionIssue(
        f"{what} name {name!r} is not valid: letters, digits, '_', '-', '.'", field=field)]


def selection_issues(pipeline: Pipeline, steps: Sequence[str] = (), until: str | None = None,
                     downstream: bool = False) -> list[DefinitionIssue]:
    """``--step``, ``--until`` and ``--downstream`` name steps of the pipeline."""
    issues = []
    for name in (*steps, *([until] if until else [])):
        if not pipeline.has_step(name):
            known = ", ".join(pipeline.step_names)
            issues.append(DefinitionIssue(f"no step named {name!r} (steps: {known})"))
    if downstream and not steps:
        issues.append(DefinitionIssue("--downstream needs --step STEP"))
    return issues


def compute_issues(store: Store | None, pipeline: Pipeline,
                   default_compute: str | None = None) -> list[DefinitionIssue]:
    """Every compute target the run uses is an executor name or a stored target."""
    computes = {default_compute or DEFAULT_COMPUTE}
    computes |= {s.header.compute for s in pipeline.steps if s.header.compute}
    named = ComputeTargets(store.workspace).names() if store else []
    issues = []
    for name in sorted(computes):
        problem = check_compute_name(name, named)
        if problem:
            step = next((s for s in pipeline.steps if s.header.compute == name), None)
            issues.append(DefinitionIssue(
                problem, step=step.name if step else None, cell=step.cell if step else None,
                field=f"--compute {name}",
            ))
    return issues


def _compute_kind(name: str, named: Mapping[str, str]) -> str:
    return named.get(name) or executor_class_name(name)


def secret_issues(store: Store | None, pipeline: Pipeline,
                  default_compute: str | None = None) -> list[DefinitionIssue]:
    """Every secret a step on ``local`` or ``docker`` asks for can be resolved here (the
    runner resolves those). A Dask step's secrets are resolved by its worker, from the
    worker's own sources, which the runner cannot see: a worker that lacks one fails the
    step with the same message."""
    steps = [s for s in pipeline.steps if s.header.secrets]
    if not steps:
        return []
    named = {t.name: t.kind for t in ComputeTargets(store.workspace).all()} if store else {}
    secrets = SecretStore(store.workspace if store else None)
    issues = []
    for step in steps:
        compute = step.header.compute or default_compute or DEFAULT_COMPUTE
        if _compute_kind(compute, named) not in ("local", "docker"):
            continue
        for use in step.header.secrets:
            if secrets.lookup(use.name) is None:
                issues.append(DefinitionIssue(
                    missing_message(use.name, secrets.places(use.name)), step=step.name,
                    cell=step.cell, field=f"--secret {use.name}"))
    return issues


def environment_issues(store: Store | None, pipeline: Pipeline,
                       default_env: str | None = None) -> list[DefinitionIssue]:
    """Every environment the steps (or ``--env``) name is defined, in the version named."""
    known = known_environments(store)
    uses: list[tuple[Step | None, str]] = [(s, s.header.env) for s in pipeline.steps if s.header.env]
    if default_env:
        uses.append((None, default_env))
    issues = []
    for step, ref in uses:
        where: dict[str, Any] = {"step": step.name if step else None,
                                 "cell": step.cell if step else None, "field": f"--env {ref}"}
        try:
            name, version = parse_env_ref(ref)
        except MlpipeError as exc:
            issues.append(DefinitionIssue(str(exc), **where))
            continue
        if name not in known:
            issues.append(DefinitionIssue(
                f"environment {name!r} is not defined (known: {', '.join(sorted(known)) or 'none'}); "
                f"create it with `mlpipe env create {name} --pip PACKAGE ...`", **where))
        elif version is not None and version not in known[name]:
            versions = ", ".join(f"v{v}" for v in known[name])
            issues.append(DefinitionIssue(
                f"environment {name!r} has no version {version} (versions: {versions})", **where))
    return issues


def dataset_pin_issues(pipeline: Pipeline, pins: Mapping[str, int],
                       datasets: Mapping[str, Collection[int]]) -> list[DefinitionIssue]:
    """Each pinned dataset (``--dataset-version NAME@vN``) is read and has that version."""
    issues = []
    used = pipeline.datasets_used()
    for name, version in sorted(pins.items()):
        option = f"--dataset-version {name}@v{version}"
        if name not in used:
            issues.append(DefinitionIssue("the pipeline reads no such dataset", field=option))
        elif version not in datasets.get(name, []):
            issues.append(DefinitionIssue(f"dataset {name!r} has no version {version}",
                                          field=option))
    return issues


def _inside(path: Path, folder: Path) -> bool:
    # lexical, so that a symbolic link inside the project may point anywhere
    return Path(os.path.normpath(path)).is_relative_to(os.path.normpath(folder))


def step_hash_files(step: Step, folder: Path) -> tuple[list[Path], list[DefinitionIssue]]:
    """The files a step's ``--hash-paths`` patterns match under ``folder`` (the notebook's
    folder), and the patterns that match nothing or reach outside it."""
    files: list[Path] = []
    issues: list[DefinitionIssue] = []
    for pattern in step.header.hash_paths:
        where: dict[str, Any] = {"step": step.name, "cell": step.cell,
                                 "field": f"--hash-paths {pattern}"}
        try:
            matched = sorted(p for p in folder.glob(pattern) if p.is_file())
        except (ValueError, NotImplementedError):  # absolute or empty patterns
            issues.append(DefinitionIssue(
                f"must be a pattern relative to the notebook's folder {folder}", **where))
            continue
        outside = [p for p in matched if not _inside(p, folder)]
        if outside:
            issues.append(DefinitionIssue(
                f"matches files outside the notebook's folder {folder} (e.g. "
                f"{os.path.normpath(outside[0])}); hash only files of the project", **where))
        elif not matched:
            issues.append(DefinitionIssue(f"matches no file under {folder}", **where))
        files += [p for p in matched if _inside(p, folder)]
    return files, issues


def hash_path_files(pipeline: Pipeline, folder: Path) -> tuple[list[Path], list[DefinitionIssue]]:
    """Every step's ``--hash-paths`` files (sorted, once each), and every problem."""
    files: set[Path] = set()
    issues: list[DefinitionIssue] = []
    for step in pipeline.steps:
        found, problems = step_hash_files(step, folder)
        files.update(found)
        issues += problems
    return sorted(files), issues


def hash_path_issues(pipeline: Pipeline, folder: Path) -> list[DefinitionIssue]:
    return hash_path_files(pipeline, folder)[1]


def notify_issues(specs: Sequence[str], on: Sequence[str] = (), *, kind: str = DEFINITION,
                  secrets: SecretStore | None = None) -> list[DefinitionIssue]:
    """``--notify`` specs and ``--notify-on`` statuses; an apprise URL apprise cannot use;
    with ``secrets``, a webhook's secret that is not there (checked for the run's own
    specs, where it is sent from this environment; not for schedules and published
    pipelines, whose runs may see other secrets)."""
    issues = []
    for raw in specs:
        spec, problems = parse_spec(raw)
        issues += [DefinitionIssue(p, field="--notify", kind=kind) for p in problems]
        if spec is None:
            continue
        if spec.kind == APPRISE:
            problem = apprise_problem(spec.target)
            if problem:
                issues.append(DefinitionIssue(f"{spec.channel}: {problem}", field="--notify",
                                              kind=kind))
        if secrets is not None and spec.secret:
            try:
                secrets.resolve(spec.secret)
            except MlpipeError as exc:
                issues.append(DefinitionIssue(f"{spec.channel}: {exc}", field="--notify",
                                              kind=kind))
    statuses, problems = parse_on(on)
    issues += [DefinitionIssue(p, field="--notify-on", kind=kind) for p in problems]
    if on and not problems and not statuses:
        issues.append(DefinitionIssue("names no status", field="--notify-on", kind=kind))
    if on and not specs:
        issues.append(DefinitionIssue("--notify-on needs --notify SPEC", field="--notify-on",
                                      kind=kind))
    return issues


def _raise_if_any(issues: Sequence[DefinitionIssue], source: str | None) -> None:
    if issues:
        raise error_for_issues(issues, source)


# -- one entry point per request --------------------------------------------------------------
def validate_run(
    store: Store | None,
    pipeline: Pipeline,
    folder: Path,
    *,
    parameters: Mapping[str, str] | None = None,
    compute: str | None = None,
    env: str | None = None,
    dataset_versions: Mapping[str, int] | None = None,
    steps: Sequence[str] = (),
    until: str | None = None,
    downstream: bool = False,
    max_parallel: int | None = None,
    notify: Sequence[str] = (),
    notify_on: Sequence[str] = (),
    extra: Sequence[DefinitionIssue] = (),
) -> dict[str, Any]:
    """Every problem of a run of ``pipeline`` (its notebook in ``folder``) at once, or the
    run's parameter values. ``store`` is None when there is no workspace yet. ``extra``:
    problems the caller found (a sweep's), reported with the others."""
    datasets = known_datasets(store)
    issues = pipeline.definition_issues(datasets, module_code(pipeline, folder))
    issues += selection_issues(pipeline, steps, until, downstream)
    issues += dataset_pin_issues(pipeline, dataset_versions or {}, datasets)
    issues += compute_issues(store, pipeline, compute)
    issues += environment_issues(store, pipeline, env)
    issues += hash_path_issues(pipeline, folder)
    issues += secret_issues(store, pipeline, compute)
    if max_parallel is not None and max_parallel < 1:
        issues.append(DefinitionIssue("--max-parallel must be at least 1"))
    issues += notify_issues(notify, notify_on,
                            secrets=SecretStore(store.workspace if store else None))
    values, problems = parameter_issues(pipeline, parameters or {})
    _raise_if_any(issues + problems + list(extra), pipeline.source)
    return values


def sweep_values(pipeline: Pipeline, fixed: Mapping[str, str], spec: SweepSpec, yes: bool
                 ) -> tuple[list[dict[str, Any]], list[DefinitionIssue]]:
    """Each member's swept values, checked like ``-p`` values, and every problem of the
    sweep (a value of the wrong type is named once, with the first member that has it)."""
    issues = sweep_issues(spec, pipeline.parameters(), fixed, yes, pipeline.source)
    if issues:  # unknown names or too many members: don't expand what won't run
        return [], issues
    members: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, texts in enumerate(spec.members(), start=1):
        values, problems = parameter_issues(pipeline, texts)
        members.append(values)
        for problem in problems:
            if problem.message not in seen:
                seen.add(problem.message)
                issues.append(DefinitionIssue(f"{problem.message} (sweep member {number})",
                                              field="--sweep", kind=problem.kind))
    return members, issues


def validate_publish(store: Store, pipeline: Pipeline, folder: Path, name: str,
                     notify: Sequence[str] = (), notify_on: Sequence[str] = ()) -> list[Path]:
    """Every problem of publishing ``pipeline`` as ``name`` at once, or the ``--hash-paths``
    files the snapshot copies."""
    issues = name_issues(name) + notify_issues(notify, notify_on)
    issues += pipeline.definition_issues(known_datasets(store), module_code(pipeline, folder))
    issues += environment_issues(store, pipeline)
    files, file_issues = hash_path_files(pipeline, folder)
    _raise_if_any(issues + file_issues, pipeline.source)
    return files


def runnable_version(store: Store, name: str, version: int | None = None) -> PublishedPipeline:
    """The published version a trigger or schedule runs: found (else
    PublishedPipelineNotFoundError listing what exists) and not disabled (else ConflictError)."""
    target = store.published.get(name, version)
    if target.disabled:
        which = "its default version " if version is None else ""
        raise ConflictError(
            f"published pipeline {name!r} {which}v{target.version} is disabled "
            f"(`mlpipe published enable {name} --version {target.version}`)"
        )
    return target


def published_pipeline(published: PublishedPipeline) -> Pipeline:
    """The pipeline of a published snapshot (read as ``load_pipeline`` reads a notebook:
    ``%%mlstep`` cells or Kale tags); messages name it ``NAME@vN``."""
    return pipeline_from_notebook(read_notebook(published.notebook), source=published.ref)


def validate_trigger(
    store: Store,
    name: str,
    version: int | None = None,
    parameters: Mapping[str, str] | None = None,
    dataset_versions: Mapping[str, int] | None = None,
    sweep: SweepSpec | None = None,
    yes: bool = False,
) -> tuple[PublishedPipeline, dict[str, Any]]:
    """The version a trigger runs and its parameter values, or every problem at once:
    what its ``mlpipe run`` (``--sweep``, with ``sweep``) would refuse, found before it
    starts. An unknown or disabled version raises its not-found or conflict error first
    (nothing else can be checked)."""
    published = runnable_version(store, name, version)
    pipeline = published_pipeline(published)
    problems: list[DefinitionIssue] = []
    if sweep is not None:
        problems = sweep_values(pipeline, parameters or {}, sweep, yes)[1]
    values = validate_run(store, pipeline, published.notebook.parent,
                          parameters=parameters, dataset_versions=dataset_versions,
                          extra=problems)
    return published, values


def _schedule_issues_of(check: Callable[[], object]) -> list[DefinitionIssue]:
    try:
        check()
    except ScheduleDefinitionError as exc:
        return [DefinitionIssue(i.message, field=i.field, kind=SCHEDULE) for i in exc.issues]
    return []


def schedule_field_issues(
    *,
    cron: str | None = None,
    timezone_name: str = "UTC",
    every_seconds: float | None = None,
    on_dataset: str | None = None,
    missed: str = "skip",
    overlap: str = "skip",
    max_retries: int = 0,
    retry_backoff: float = 0.0,
    timeout: float | None = None,
    name: str | None = None,
    now: float = 0.0,
) -> list[DefinitionIssue]:
    """The schedule's own fields: one trigger, cron and time zone, interval, policies, name."""
    # imported here: every `mlpipe run` validates, and only schedules need cron (~18 ms)
    from mlpipe_jupyter.model.cron import CronExpression, load_timezone
    from mlpipe_jupyter.model.schedule_policies import MISSED_POLICIES, OVERLAP_POLICIES

    issues: list[DefinitionIssue] = []

    def add(message: str) -> None:
        issues.append(DefinitionIssue(message, kind=SCHEDULE))

    if len([t for t in (cron, every_seconds, on_dataset) if t is not None]) != 1:
        add("give exactly one of --cron, --every and --on-dataset")
    zone_issues = _schedule_issues_of(lambda: load_timezone(timezone_name))
    issues += zone_issues
    if cron is not None:
        parsed: list[CronExpression] = []
        issues += _schedule_issues_of(lambda: parsed.append(CronExpression.parse(cron)))
        if parsed and not zone_issues:  # "never fires" is an error now
            issues += _schedule_issues_of(lambda: parsed[0].next_after(
                datetime.fromtimestamp(now, tz=UTC), load_timezone(timezone_name)))
    if every_seconds is not None and every_seconds < 1:
        add("--every must be at least 1s")
    if missed not in MISSED_POLICIES:
        add(f"--missed {missed!r}: expected one of {', '.join(MISSED_POLICIES)}")
    if overlap not in OVERLAP_POLICIES:
        add(f"--overlap {overlap!r}: expected one of {', '.join(OVERLAP_POLICIES)}")
    if max_retries < 0:
        add(f"--retries {max_retries}: must be 0 or more")
    if retry_backoff < 0:
        add(f"--retry-backoff {retry_backoff}: must be 0 or more")
    if timeout is not None and timeout <= 0:
        add(f"--timeout {timeout}: must be more than 0")
    if name is not None:
        issues += [DefinitionIssue(i.message, field=i.field, kind=SCHEDULE)
                   for i in name_issues(name, "schedule")]
    return issues


def validate_schedule(
    store: Store,
    pipeline: str,
    version: int | None = None,
    parameters: Mapping[str, str] | None = None,
    on_dataset: str | None = None,
    notify: Sequence[str] = (),
    notify_on: Sequence[str] = (),
    sweep: Sequence[str] = (),
    samples: int | None = None,
    seed: int | None = None,
    yes: bool = False,
    **fields: Any,
) -> PublishedPipeline:
    """The published version a schedule fires, or every problem of the schedule at once:
    its own fields (``schedule_field_issues(**fields)``, with ``on_dataset``), its
    parameters, its sweep (``--sweep`` texts, ``--samples``, ``--seed``: each firing
    starts it) and the dataset it watches. An unknown or disabled version raises its
    not-found or conflict error, unless the schedule's own fields have problems: those
    are reported first (the parameters cannot be checked without the version)."""
    issues = schedule_field_issues(on_dataset=on_dataset, **fields)
    issues += notify_issues(notify, notify_on, kind=SCHEDULE)
    spec: SweepSpec | None = None
    try:
        spec = requested_sweep(sweep, samples, seed)
    except SweepSyntaxError as exc:
        issues += exc.issues
    try:
        published = runnable_version(store, pipeline, version)
    except MlpipeError:
        _raise_if_any(issues, None)
        raise
    target = published_pipeline(published)
    issues += parameter_issues(target, parameters or {})[1]
    if spec is not None:
        issues += sweep_values(target, parameters or {}, spec, yes)[1]
    if on_dataset is not None and on_dataset not in published.datasets:
        issues.append(DefinitionIssue(
            f"--on-dataset {on_dataset}: {published.ref} reads no such dataset "
            f"(it reads: {', '.join(published.datasets) or 'none'})", kind=SCHEDULE))
    _raise_if_any(issues, published.ref)
    return published


__all__ = [
    "compute_issues", "dataset_pin_issues", "environment_issues", "hash_path_files",
    "hash_path_issues", "known_datasets", "known_environments", "name_issues", "notify_issues",
    "secret_issues",
    "parameter_issues", "published_pipeline", "runnable_version", "schedule_field_issues",
    "selection_issues", "step_hash_files", "sweep_values", "validate_publish", "validate_run",
    "validate_schedule", "validate_trigger",
]
