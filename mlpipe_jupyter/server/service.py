"""What the REST handlers ask of the library: one object per Jupyter server.

It answers with the run read model (``runner.view``) as JSON-ready dictionaries
(``payloads``), maps paths between the server root and the file system (refusing anything
outside the root), starts runs in background threads of the server process and keeps them
so that they can be canceled. Runs started elsewhere (the CLI, a kernel) are seen through
the store like any other. Published pipelines and schedules are ``scheduling``'s, datasets
``datasets``'.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import ConflictError, MlpipeError, NotFoundError, WorkspaceError
from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.model.sweep import SweepSpec
from mlpipe_jupyter.model.values import literal_mapping, parameter_texts
from mlpipe_jupyter.notebook import load_pipeline, may_define_pipeline
from mlpipe_jupyter.processes import process_alive
from mlpipe_jupyter.runner.background import BackgroundRun
from mlpipe_jupyter.runner.compare import Comparison, check_refs, compare_runs
from mlpipe_jupyter.runner.compare import chart_spec as compare_chart_spec
from mlpipe_jupyter.runner.explain import explain_step
from mlpipe_jupyter.runner.lineage import run_lineage
from mlpipe_jupyter.runner.planning import Selection
from mlpipe_jupyter.runner.runner import RunRequest
from mlpipe_jupyter.runner.sweep import member_run_id
from mlpipe_jupyter.runner.sweep_view import chart_spec, read_sweep, resolve_metric
from mlpipe_jupyter.runner.view import read_run, read_step, received_variables, step_counts
from mlpipe_jupyter.server.datasets import DatasetsService
from mlpipe_jupyter.server.errors import BadRequestError, ForbiddenPathError
from mlpipe_jupyter.server.payloads import (
    json_safe,
    notifications_payload,
    run_details,
    run_summary,
    step_payload,
    sweep_summary,
)
from mlpipe_jupyter.server.scheduling import SchedulingService
from mlpipe_jupyter.store import RunRecord, Store, SweepRecord
from mlpipe_jupyter.store.workspace import WORKSPACE_DIRNAME, Workspace, find_workspace_dir
from mlpipe_jupyter.validation import module_code

log = logging.getLogger(__name__)

MAX_PAGE = 500
MAX_COMPARED = 100  # runs in one comparison
# Folders never searched for notebooks: hidden ones (.mlpipe, .git, checkpoints) and these.
_SKIPPED_FOLDERS = {"node_modules", "__pycache__", "site-packages"}
_MAX_NOTEBOOKS = 1000


@dataclass(frozen=True)
class LogChunk:
    """A piece of a step's log: ``text`` from ``start`` to ``offset`` (bytes)."""

    run_id: str  # the run whose log this is (the producing run for a reused step)
    text: str
    offset: int
    final: bool  # the step has ended: no more text will come


class PipelineService:
    """The library, as the REST API of one Jupyter server (rooted at ``root``) sees it."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self._store: Store | None = None
        self._live: dict[str, BackgroundRun] = {}
        self._lock = threading.Lock()
        self.scheduling = SchedulingService(self.store)
        self.datasets = DatasetsService(self.store)

    # -- the workspace ------------------------------------------------------------------
    @property
    def workspace_dir(self) -> Path:
        """``$MLPIPE_HOME``, else the nearest ``.mlpipe/`` at or above the root, else a new
        one in the root (created by the first run)."""
        return find_workspace_dir(self.root) or self.root / WORKSPACE_DIRNAME

    def store(self, create: bool = False) -> Store | None:
        """The workspace's store; None while there is no workspace and ``create`` is False."""
        folder = self.workspace_dir
        if self._store is None or self._store.workspace.root != folder:
            if not folder.is_dir() and not create:
                return None
            self._store = Store(Workspace(folder))
        return self._store

    def _existing_store(self) -> Store:
        store = self.store()
        if store is None or not store.workspace.db_path.exists():
            raise NotFoundError("no runs yet: this server's folder has no mlpipe workspace")
        return store

    # -- paths ----------------------------------------------------------------------------
    def resolve(self, relative: str) -> Path:
        """A path given relative to the server root, refused when it leaves the root."""
        if not isinstance(relative, str) or not relative.strip():
            raise BadRequestError("a notebook path (relative to the server root) is required")
        path = (self.root / relative.lstrip("/")).resolve()
        if path != self.root and not path.is_relative_to(self.root):
            raise ForbiddenPathError(f"{relative!r} is outside the Jupyter server's root folder")
        return path

    def relative(self, path: str | Path) -> str | None:
        """``path`` relative to the root (POSIX), or None when it lies outside."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root):
            return None
        return resolved.relative_to(self.root).as_posix()

    def notebook_file(self, relative: str) -> Path:
        path = self.resolve(relative)
        if path.suffix != ".ipynb":
            raise BadRequestError(f"{relative!r} is not a notebook (.ipynb)")
        if not path.is_file():
            raise NotFoundError(f"notebook {relative!r} does not exist")
        return path

    # -- notebooks ------------------------------------------------------------------------
    def _notebook_files(self) -> Iterator[Path]:
        count = 0
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = sorted(
                d for d in subfolders if not d.startswith(".") and d not in _SKIPPED_FOLDERS
            )
            for name in sorted(files):
                if name.endswith(".ipynb") and not name.startswith("."):
                    count += 1
                    if count > _MAX_NOTEBOOKS:
                        return
                    yield Path(folder) / name

    def list_notebooks(self) -> list[dict[str, Any]]:
        """Notebooks under the root that contain ``%%mlstep`` cells or Kale step tags, with
        their steps."""
        found = []
        for path in self._notebook_files():
            try:
                if not may_define_pipeline(path.read_text(encoding="utf-8", errors="replace")):
                    continue
            except OSError:
                continue
            found.append(self._notebook_summary(path))
        return found

    def _notebook_summary(self, path: Path) -> dict[str, Any]:
        item: dict[str, Any] = {"path": self.relative(path), "kind": None, "steps": [],
                                "parameters": {}, "parameter_texts": {}, "error": None}
        try:
            pipeline = load_pipeline(path)
        except MlpipeError as exc:
            item["error"] = str(exc)
            return item
        item["kind"] = pipeline.kind
        item["steps"] = [
            {"name": s.name, "cell": s.cell, "upstream": sorted(pipeline.upstream(s.name)),
             "variables": received_variables(f"{f.producer}.{f.name}"
                                             for f in pipeline.flows_into(s.name))}
            for s in pipeline.steps
        ]
        item["parameters"] = json_safe(pipeline.parameters())
        item["parameter_texts"] = parameter_texts(pipeline.parameters())
        issues = pipeline.definition_issues(None, module_code(pipeline, path.parent))
        item["error"] = "\n".join(str(i) for i in issues) or None
        return item

    def notebook(self, relative: str) -> dict[str, Any]:
        """One notebook's pipeline: steps, DAG edges, parameters and definition errors."""
        return self._notebook_summary(self.notebook_file(relative))

    # -- runs -----------------------------------------------------------------------------
    def list_runs(
        self,
        notebook: str | None = None,
        experiment: str | None = None,
        status: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> dict[str, Any]:
        """A page of runs, newest first, filtered as asked."""
        if status is not None and status not in {s.value for s in RunStatus}:
            known = ", ".join(s.value for s in RunStatus)
            raise BadRequestError(f"unknown status {status!r} (one of: {known})")
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequestError(f"limit must be between 1 and {MAX_PAGE}")
        if offset < 0:
            raise BadRequestError("offset must not be negative")
        notebook_path = str(self.resolve(notebook)) if notebook else None
        page: dict[str, Any] = {"runs": [], "limit": limit, "offset": offset}
        store = self.store()
        if store is None or not store.workspace.db_path.exists():
            return page
        store.runs.mark_dead_runs()
        runs = store.runs.list_runs(notebook_path, experiment, status, limit, offset)
        page["runs"] = [self.run_summary(store, run) for run in runs]
        return page

    def run_summary(self, store: Store, run: RunRecord) -> dict[str, Any]:
        return run_summary(run, step_counts(store, run.id), self._notebook_name(run),
                           run.id in self._live)

    def _notebook_name(self, run: RunRecord) -> str:
        return self.relative(run.notebook) or run.notebook

    def run(self, run_ref: str) -> dict[str, Any]:
        """A run with its steps: statuses, durations, fingerprints, decisions, metrics."""
        store = self._existing_store()
        store.runs.mark_dead_runs()
        view = read_run(store, run_ref)
        assert view.record is not None  # read from the store
        detail = run_summary(view.record, view.step_counts(), self._notebook_name(view.record),
                             view.run_id in self._live)
        detail.update(run_details(view.record))
        detail["notifications"] = notifications_payload(store.notify.of_run(view.record.id))
        detail["datasets"] = run_lineage(store, view.run_id)
        detail["steps"] = [step_payload(step) for step in view.steps]
        return detail

    def step(self, run_ref: str, step: str) -> dict[str, Any]:
        """One step of a run, with the full explanation of its reuse decision."""
        store = self._existing_store()
        view = read_step(store, run_ref, step)
        detail = step_payload(view)
        detail["run_id"] = view.run_id
        detail["why"] = explain_step(store, view.run_id, step)
        return detail

    # -- logs and output notebooks --------------------------------------------------------
    def read_log(self, run_ref: str, step: str, offset: int | None = None,
                 tail: int | None = None) -> LogChunk:
        """The step's log from byte ``offset`` on, or its last ``tail`` lines (default 200);
        a reused step's log is that of the run that produced its result."""
        if offset is not None and offset < 0:
            raise BadRequestError("offset must not be negative")
        if tail is not None and not 1 <= tail <= 100_000:
            raise BadRequestError("tail must be between 1 and 100000")
        store = self._existing_store()
        view = read_step(store, run_ref, step)
        run_id = view.source_run_id
        assert view.log_path is not None  # read from the store
        try:
            with view.log_path.open("rb") as handle:
                if offset is not None:
                    handle.seek(offset)
                    data = handle.read()
                    end = offset + len(data)
                else:
                    data = handle.read()
                    end = len(data)
        except FileNotFoundError:
            data, end = b"", offset or 0
        text = data.decode("utf-8", errors="replace")
        if offset is None:
            text = "\n".join(text.splitlines()[-(tail or 200):])
        # a reused step's log is complete; otherwise the step's own state says
        final = store.runs.step_run(run_id, step).status.is_final or view.is_final
        return LogChunk(run_id, text, end, final)

    def _output_notebook(self, run_ref: str, step: str) -> tuple[str, Path]:
        """The run whose executed notebook the step's is (its source run), and its path."""
        view = read_step(self._existing_store(), run_ref, step)
        assert view.output_notebook is not None  # read from the store
        return view.source_run_id, view.output_notebook

    def output_notebook(self, run_ref: str, step: str, allow_hidden: bool) -> dict[str, Any]:
        """Where the step's executed notebook is, and whether JupyterLab can open it."""
        run_id, path = self._output_notebook(run_ref, step)
        if not path.exists():
            raise NotFoundError(f"step {step!r} of run {run_id} has no output notebook "
                                "(it did not execute, or has not started yet)")
        relative = self.relative(path)
        hidden = relative is not None and any(p.startswith(".") for p in relative.split("/"))
        return {
            "run_id": run_id,
            "step": step,
            "path": relative,
            # JupyterLab's contents API refuses hidden folders (.mlpipe) unless allowed
            "openable": relative is not None and (allow_hidden or not hidden),
        }

    def output_notebook_file(self, run_ref: str, step: str) -> Path:
        run_id, path = self._output_notebook(run_ref, step)
        if not path.exists():
            raise NotFoundError(f"step {step!r} of run {run_id} has no output notebook")
        return path

    # -- starting and stopping runs -------------------------------------------------------
    def start_run(
        self,
        notebook: str,
        parameters: Mapping[str, Any] | None = None,
        compute: str | None = None,
        selection: Selection | None = None,
        experiment: str | None = None,
        notify: Sequence[str] = (),
        notify_on: Sequence[str] = (),
        sweep: SweepSpec | None = None,
        yes: bool = False,
    ) -> dict[str, Any]:
        """Start a run (or, given ``sweep``, a sweep: ``yes`` confirms one of more than
        ``CONFIRM_ABOVE`` members) in a background thread; returns once it is recorded.
        Blocks for the validation and planning, so call it off the event loop."""
        path = self.notebook_file(notebook)
        request = RunRequest(
            notebook=path,
            parameters=parameter_texts(parameters),
            compute=compute,
            selection=selection or Selection(),
            experiment=experiment,
            notify=tuple(notify),
            notify_on=tuple(notify_on),
        )
        store = self.store(create=True)
        background = BackgroundRun(request, store, sweep=sweep, yes=yes)
        background.start()
        if background.error is not None:
            raise background.error
        if background.run_id is None:
            raise WorkspaceError("the run did not start within its start timeout")
        # a sweep is live under its id and its members' (canceling one cancels the sweep)
        keys = [background.run_id]
        if sweep is not None and background.sweep_id is not None:
            keys = [background.sweep_id] + _member_ids(background.sweep_id, sweep)
        with self._lock:
            for key in keys:
                self._live[key] = background
        threading.Thread(target=self._forget_when_done, args=(background, keys),
                         daemon=True).start()
        if sweep is not None:
            return {"sweep_id": background.sweep_id, "status": RunStatus.RUNNING.value,
                    "members": sweep.size(), "run_ids": keys[1:]}
        return {"run_id": background.run_id, "status": RunStatus.RUNNING.value}

    def _forget_when_done(self, background: BackgroundRun, keys: list[str]) -> None:
        background.wait()
        if background.error is not None:
            log.error("mlpipe %s %s failed", "sweep" if background.sweep_id else "run",
                      background.sweep_id or background.run_id, exc_info=background.error)
        with self._lock:
            for key in keys:
                self._live.pop(key, None)

    def rerun_step(self, run_ref: str, step: str) -> dict[str, Any]:
        """A new run of the run's notebook: ``step`` (forced) and its downstream steps, with
        the run's parameters and compute target; the other steps are reused."""
        store = self._existing_store()
        run = store.runs.get_run(run_ref)
        store.runs.step_run(run.id, step)  # 404 for an unknown step
        relative = self.relative(run.notebook)
        if relative is None:
            raise ForbiddenPathError(f"run {run.id}'s notebook is outside the server's root")
        return self.start_run(
            relative,
            # literals, not -p texts: a string parameter "1" must stay a string
            parameters=literal_mapping(run.params),
            compute=run.options.get("compute"),
            selection=Selection(steps=(step,), downstream=True),
            experiment=run.experiment,
        )

    def cancel(self, run_ref: str) -> dict[str, Any]:
        """Cancel a running run: through its runner when this server started it, else by
        SIGTERM to the ``mlpipe run`` process that runs it (the CLI cancels on SIGTERM)."""
        store = self._existing_store()
        store.runs.mark_dead_runs()
        run = store.runs.get_run(run_ref)
        if run.status.is_final:
            raise ConflictError(f"run {run.id} has already ended ({run.status.value})")
        with self._lock:
            background = self._live.get(run.id)
        if background is not None:
            background.cancel()
            return {"run_id": run.id, "status": "canceling"}
        if run.host != socket.gethostname():
            raise ConflictError(f"run {run.id} runs on host {run.host}; cancel it there")
        if not _is_cli_runner(run.pid):
            raise ConflictError(
                f"run {run.id} is not run by an `mlpipe run` command (pid {run.pid}); "
                "cancel it where it was started (`%mlpipe cancel` in its notebook)"
            )
        try:
            os.kill(run.pid, signal.SIGTERM)
        except ProcessLookupError:
            raise ConflictError(f"run {run.id} has already ended") from None
        return {"run_id": run.id, "status": "canceling"}

    # -- sweeps ---------------------------------------------------------------------------
    def list_sweeps(self, notebook: str | None = None, limit: int = 20) -> dict[str, Any]:
        """Sweeps, newest first (of one notebook, given relative to the root)."""
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequestError(f"limit must be between 1 and {MAX_PAGE}")
        notebook_path = str(self.resolve(notebook)) if notebook else None
        store = self.store()
        if store is None or not store.workspace.db_path.exists():
            return {"sweeps": [], "limit": limit}
        store.runs.mark_dead_runs()
        records = store.sweeps.list(limit, notebook_path)
        return {"sweeps": [self._sweep_summary(r) for r in records], "limit": limit}

    def _sweep_summary(self, record: SweepRecord) -> dict[str, Any]:
        with self._lock:
            live = record.id in self._live
        return sweep_summary(record, self.relative(record.notebook) or record.notebook, live)

    def sweep(self, ref: str, sort: str | None = None, ascending: bool = False
              ) -> dict[str, Any]:
        """A sweep's table: each member's swept values, metrics and status, ranked by
        ``sort`` (a metric; 404 naming the metrics when it is not one of them)."""
        view = read_sweep(self._existing_store(), ref, sort, ascending)
        detail = json_safe(view.to_dict())
        detail["notebook"] = self.relative(view.record.notebook) or view.record.notebook
        with self._lock:
            detail["live"] = view.record.id in self._live
        return dict(detail)

    def sweep_chart(self, ref: str, metric: str | None = None,
                    parameter: str | None = None) -> dict[str, Any]:
        """The Vega-Lite chart of ``metric`` (default: the first one) against ``parameter``
        (default: the first swept one); 404 naming the choices for an unknown one."""
        view = read_sweep(self._existing_store(), ref)
        if metric is None and view.sort is None:
            raise NotFoundError(f"sweep {view.record.id} has no metric to chart yet: no "
                                "member logged one")
        chosen = resolve_metric(metric, view.metrics) if metric else view.sort
        assert chosen is not None
        if parameter is None:
            parameter = view.parameters[0]
        elif parameter not in view.parameters:
            raise NotFoundError(f"{parameter!r} is not a swept parameter of sweep "
                                f"{view.record.id} (its swept parameters: "
                                f"{', '.join(view.parameters)})")
        return dict(json_safe(chart_spec(view, chosen, parameter)))

    # -- comparing runs -------------------------------------------------------------------
    def _comparison(self, refs: Sequence[str]) -> Comparison:
        check_refs(refs)
        if len(refs) > MAX_COMPARED:
            raise BadRequestError(f"compare at most {MAX_COMPARED} runs at once, not {len(refs)}")
        store = self._existing_store()
        store.runs.mark_dead_runs()
        return compare_runs(store, refs)

    def compare(self, refs: Sequence[str]) -> dict[str, Any]:
        """Runs side by side (the first is the baseline): parameters, metrics, and for each
        step which fingerprint components differ from the baseline's, with the sentences
        that explain them (``runner.compare``). Fewer than two runs is a 400, an unknown
        run a 404."""
        comparison = self._comparison(refs)
        detail = dict(json_safe(comparison.to_dict()))
        for run, view in zip(detail["runs"], comparison.runs, strict=True):
            run["notebook"] = self.relative(view.notebook) or view.notebook
            run["sweep"] = view.record.options.get("sweep") if view.record else None
        return detail

    def compare_chart(self, refs: Sequence[str], metric: str | None = None,
                      parameter: str | None = None) -> dict[str, Any]:
        """The Vega-Lite chart of ``metric`` (default: the first that differs) across the
        runs, or against ``parameter``; 404 naming the choices for an unknown one."""
        return dict(json_safe(compare_chart_spec(self._comparison(refs), metric, parameter)))

    def shutdown(self) -> None:
        """Cancel the runs this server started (the server is stopping)."""
        with self._lock:
            live = list({id(b): b for b in self._live.values()}.values())
        for background in live:
            background.cancel()
        for background in live:
            background.wait(30)

    # -- change detection (for live updates) ----------------------------------------------
    def change_marker(self) -> tuple[int, ...] | None:
        """Changes whenever any process commits to the store (cheap: two pragmas)."""
        store = self.store()
        if store is None or not store.workspace.db_path.exists():
            return None
        try:
            # data_version ignores this connection's own commits (runs of this server);
            # the marker also counts those
            return store.workspace.change_marker()
        except Exception:  # a store being created or removed: try again next time
            return None

    def recent_signatures(self, limit: int = 50) -> dict[str, str]:
        """A short signature of each recent or running run, to find the ones that changed."""
        store = self.store()
        if store is None or not store.workspace.db_path.exists():
            return {}
        return {run_id: json.dumps(list(signature))
                for run_id, signature in store.runs.signatures(limit).items()}

    def summary_of(self, run_id: str) -> dict[str, Any]:
        store = self._existing_store()
        return self.run_summary(store, store.runs.get_run(run_id))


def _member_ids(sweep_id: str, spec: SweepSpec) -> list[str]:
    return [member_run_id(sweep_id, n) for n in range(1, spec.size() + 1)]


def _is_cli_runner(pid: int) -> bool:
    """Whether ``pid`` is an ``mlpipe run`` process (never a kernel: SIGTERM kills those)."""
    if not process_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False  # no /proc: we cannot tell, so we don't signal
    words = [a.decode(errors="replace") for a in argv]
    if any("ipykernel" in w for w in words):
        return False
    return "run" in words and any("mlpipe" in w for w in words)
