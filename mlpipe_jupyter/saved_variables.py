"""Variables that pipeline runs saved, loaded back: ``%mlpipe load``, ``load_variable``, and
the ``--use`` variables of an interactive ``%%mlstep`` cell the kernel does not have.

A step's variables are those its committed result holds (``handover``): a reused step's
are its result's producer's. Only variables a later step receives are saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import MlpipeError, NotFoundError
from mlpipe_jupyter.model.grammar import STEP_MAGIC
from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.model.step import VARIABLES_OUTPUT
from mlpipe_jupyter.store import StepRunRecord, Store


@dataclass(frozen=True)
class SavedVariable:
    """A variable that step ``step`` saved in a pipeline run, loaded."""

    step: str
    name: str
    value: Any
    run_id: str  # the run in which the step succeeded or was reused
    result_id: str
    producer_run_id: str | None  # the run that executed it (another one when reused)
    entry: Mapping[str, Any]  # its manifest entry: file, format, type, bytes, libraries

    @property
    def reused(self) -> bool:
        return self.producer_run_id is not None and self.producer_run_id != self.run_id

    def describe(self) -> str:
        """'df: pandas.DataFrame, shape (3, 2), from step 'load' of run R (computed in run P)'."""
        kind = type(self.value)
        shown = kind.__qualname__ if kind.__module__ == "builtins" else \
            f"{kind.__module__.partition('.')[0]}.{kind.__qualname__}"
        size = ""
        shape = getattr(self.value, "shape", None)
        if isinstance(shape, tuple):
            size = f", shape {shape}"
        elif isinstance(self.value, list | tuple | dict | set | frozenset):
            size = f", {len(self.value)} items"
        origin = f" (computed in run {self.producer_run_id})" if self.reused else ""
        return (f"{self.name}: {shown}{size}, from step '{self.step}' of run "
                f"{self.run_id}{origin}")


def parse_variable_ref(text: str) -> tuple[str, str]:
    """``"STEP.NAME"`` as (step, name)."""
    step, dot, name = text.strip().partition(".")
    if not dot or not step or not name.isidentifier():
        raise MlpipeError(f"{text!r} is not STEP.NAME (e.g. prepare.df): which step saved "
                          "the variable, and its name")
    return step, name


def saved_variable(
    store: Store, step: str, name: str, run: str | None = None, notebook: str | None = None,
) -> SavedVariable:
    """The variable ``name`` that ``step`` saved in run ``run`` (an id, a prefix or
    'latest'), by default in the latest run of ``notebook`` (of any notebook when None) in
    which the step succeeded or was reused. NotFoundError says what is missing."""
    if run is None:
        return latest_saved(store, step, name, notebook, explain=True)
    record = store.runs.step_run(store.runs.get_run(run).id, step)
    if record.status not in (StepStatus.SUCCEEDED, StepStatus.REUSED) or not record.result_id:
        raise NotFoundError(f"step {step!r} did not succeed in run {record.run_id} (it "
                            f"{_status_words(record)}): it saved no variables there")
    return _load_saved(store, record, name, explain=True)


def latest_saved(store: Store, step: str, name: str, notebook: Path | str | None,
                  explain: bool = False) -> SavedVariable:
    record = None
    if store.workspace.db_path.exists():
        record = store.runs.latest_committed(step, str(notebook) if notebook else None)
    if record is None:
        of = f" of {notebook}" if notebook else ""
        if not explain:
            raise NotFoundError(f"step {step!r} has no saved result{of} yet")
        runs = (store.runs.list_runs(str(notebook) if notebook else None, limit=1)
                if store.workspace.db_path.exists() else [])
        if not runs:
            raise NotFoundError(f"no pipeline run{of} yet: run the pipeline first "
                                "(`%mlpipe run` or `mlpipe run NOTEBOOK`)")
        steps = {record.step: record for record in store.runs.step_runs(runs[0].id)}
        if step not in steps:
            raise NotFoundError(f"the latest run{of} ({runs[0].id}) has no step {step!r} "
                                f"(its steps: {', '.join(steps) or 'none'})")
        raise NotFoundError(f"step {step!r} has not succeeded in any run{of} yet (in the "
                            f"latest, {runs[0].id}, it {_status_words(steps[step])})")
    return _load_saved(store, record, name, explain)


def _status_words(record: StepRunRecord) -> str:
    return {StepStatus.FAILED: "failed", StepStatus.SKIPPED: "was skipped",
            StepStatus.CANCELED: "was canceled"}.get(record.status, f"is {record.status.value}")


def _load_saved(store: Store, record: StepRunRecord, name: str, explain: bool) -> SavedVariable:
    """``name`` from the variables that the committed result of ``record`` holds; ``explain``
    says in the error which variables are saved and how to save more."""
    from mlpipe_jupyter import handover  # numpy, pandas, cloudpickle only when a value needs them

    step, run_id = record.step, record.run_id
    assert record.result_id is not None  # succeeded or reused
    if not store.results.path(record.result_id).is_dir():
        raise NotFoundError(f"the result of step {step!r} in run {run_id} is no longer in the "
                            "workspace")
    folder = store.results.path(record.result_id, VARIABLES_OUTPUT)
    hint = (f"only variables a later step uses are saved; add `--use {step}.{name}` to a "
            f"later step's {STEP_MAGIC} line and run the pipeline again, or write {name} into "
            f"an --output folder of step {step!r}")
    saved = handover.describe(folder).get("variables", {}) if folder.is_dir() else {}
    if name not in saved and not explain:  # the consumer declares it: an older result
        raise NotFoundError(f"the latest result of step {step!r} (run {run_id}) did not save "
                            "it")
    if not folder.is_dir():
        raise NotFoundError(f"step {step!r} saves no variables (run {run_id}): {hint}")
    if name not in saved:
        raise NotFoundError(f"step {step!r} saved no variable {name!r} in run {run_id} (it "
                            f"saved: {', '.join(saved) or 'none'}): {hint}")
    producer = record.reused_from
    if record.status is StepStatus.REUSED and producer is None:
        found = store.runs.producer_of(record.result_id)
        producer = found.run_id if found else None
    return SavedVariable(step, name, handover.load_variable(folder, name), run_id,
                         record.result_id, producer or run_id, saved[name])
