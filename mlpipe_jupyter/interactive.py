"""Running ``%%mlstep`` cells interactively: the kernel's pipeline registry and step binding.

The magics (``mlpipe_jupyter.jupyter.magics``) parse and call what is here; nothing here
imports IPython, so all of it can be tested and reused without a kernel.

An interactive step sees what its pipeline run would see: dataset inputs are the dataset
version's folder, upstream inputs the upstream step's latest output (the newest of its
committed result and its last successful interactive run in this kernel), outputs a scratch
folder of the workspace emptied before every run, parameters their defaults. A variable
it receives (``--use STEP.NAME``) is the kernel's own when the kernel has it (the user ran
STEP's cell), else the one STEP's latest committed result saved (``handover``).

``load_variable("STEP.NAME")`` (``%mlpipe load``) brings a variable that a pipeline run
saved into the kernel (``saved_variables``): by default from this notebook's latest run.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import HeaderSyntaxError, MlpipeError, NotFoundError
from mlpipe_jupyter.model.grammar import SETUP_MAGIC, STEP_MAGIC, parse_step_header
from mlpipe_jupyter.model.pipeline import Pipeline
from mlpipe_jupyter.model.step import DatasetInput, StepHeader
from mlpipe_jupyter.notebook import pipeline_from_cells
from mlpipe_jupyter.render import KERNELSPEC
from mlpipe_jupyter.saved_variables import (
    SavedVariable,
    latest_saved,
    parse_variable_ref,
    saved_variable,
)
from mlpipe_jupyter.step_context import StepContext, activate
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.results import discard

SCRATCH_DIRNAME = "scratch"
INTERACTIVE_RUN_ID = "interactive"
# Written next to the kernel's working folder (not inside the workspace) because a step runs
# in its notebook's folder: relative paths and local modules must resolve as they do here.
INTERACTIVE_NOTEBOOK_NAME = ".mlpipe-interactive.ipynb"
# Where kernels tell us which notebook they belong to (JupyterLab, VS Code, jupyter_server).
NOTEBOOK_VARIABLES = ("__vsc_ipynb_file__", "__session__")
NOTEBOOK_ENVIRONMENT = "JPY_SESSION_NAME"


# -- the kernel's registry ---------------------------------------------------------------------
@dataclass
class RegisteredCell:
    """A ``%%mlstep`` or ``%%mlsetup`` cell as the kernel last ran it."""

    kind: str  # "step" or "setup"
    source: str  # the whole cell, magic line included: what a generated notebook gets
    name: str | None = None  # the step name (steps only)
    cell_id: str | None = None  # the front-end's cell id, when it sends one


@dataclass(frozen=True)
class InteractiveResult:
    """The outputs of a step's last successful interactive run in this kernel."""

    outputs: dict[str, Path]
    finished_at: float


class PipelineRegistry:
    """The steps and setup cells run (or registered) in this kernel, in cell order.

    A step is keyed by its name, and by its cell id when the front-end sends one: running
    a cell again (even renamed) replaces its entry in place instead of adding another.
    """

    def __init__(self) -> None:
        self._cells: list[RegisteredCell] = []
        self.interactive_results: dict[str, InteractiveResult] = {}

    @property
    def cells(self) -> list[RegisteredCell]:
        return list(self._cells)

    @property
    def step_names(self) -> list[str]:
        return [c.name for c in self._cells if c.kind == "step" and c.name]

    def register_step(self, name: str, source: str, cell_id: str | None = None) -> None:
        """Add or replace the step ``name`` (or the step last run from ``cell_id``)."""
        self._put(
            RegisteredCell("step", source, name, cell_id),
            lambda c: (c.kind == "step" and c.name == name)
            or (cell_id is not None and c.cell_id == cell_id),
        )

    def register_setup(self, source: str, cell_id: str | None = None) -> None:
        """Add or replace a setup cell (same cell id, or the same code when ids are unknown)."""
        self._put(
            RegisteredCell("setup", source, None, cell_id),
            lambda c: (cell_id is not None and c.cell_id == cell_id)
            or (c.kind == "setup" and c.source == source),
        )

    def _put(self, entry: RegisteredCell, replaces: Any) -> None:
        positions = [i for i, c in enumerate(self._cells) if replaces(c)]
        if positions:
            self._cells[positions[0]] = entry
            for index in reversed(positions[1:]):
                del self._cells[index]
        else:
            self._cells.append(entry)

    def clear(self) -> None:
        self._cells.clear()
        self.interactive_results.clear()

    def pipeline(self) -> Pipeline:
        """The registered cells as a pipeline (not validated)."""
        return pipeline_from_cells([(None, c.source) for c in self._cells],
                                   source="the registered cells")

    def write_notebook(self, path: Path) -> Path:
        """Write the registered cells as a notebook (atomically: a run may be reading it)."""
        if not self.step_names:
            raise MlpipeError(
                f"no steps registered in this kernel: run a {STEP_MAGIC} cell first "
                "(or save the notebook so that its file can be run)"
            )
        notebook = {
            "cells": [
                {"cell_type": "code", "execution_count": None, "id": uuid.uuid4().hex[:8],
                 "metadata": {}, "outputs": [], "source": c.source}
                for c in self._cells
            ],
            "metadata": {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(notebook, indent=1), encoding="utf-8")
        os.replace(partial, path)
        return path


def cell_source(magic: str, line: str, body: str) -> str:
    """The cell text a magic was called with (IPython hands the magic line and body apart)."""
    return f"{magic} {line}".rstrip() + "\n" + body


# -- headers -----------------------------------------------------------------------------------
def parse_header(line: str) -> StepHeader:
    """The header of a ``%%mlstep`` line; HeaderSyntaxError has one line per mistake."""
    parsed = parse_step_header(line)
    if parsed.issues or parsed.header is None:
        raise HeaderSyntaxError("\n".join(str(issue) for issue in parsed.issues))
    return parsed.header


def check_setup_line(line: str) -> None:
    if line.strip():
        raise HeaderSyntaxError(f"{SETUP_MAGIC} takes no options (got {line.strip()!r})")


# -- binding a step ----------------------------------------------------------------------------
@dataclass
class StepBinding:
    """What an interactive step sees: its folders, sources and parameter values."""

    header: StepHeader
    inputs: dict[str, Path] = field(default_factory=dict)
    input_sources: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    # --use variables the kernel did not have, loaded from their producer's latest result
    variables: dict[str, SavedVariable] = field(default_factory=dict)

    @property
    def step(self) -> str:
        return self.header.name

    def context_spec(self, notebook: Path | None = None) -> dict[str, Any]:
        """The spec ``step_context.activate`` takes (metrics stay in memory: no run record)."""
        return {
            "run_id": INTERACTIVE_RUN_ID,
            "step": self.step,
            "notebook": str(notebook) if notebook else "",
            "parameters": dict(self.parameters),
            "inputs": {k: {"path": str(p), "source": self.input_sources.get(k, "")}
                       for k, p in self.inputs.items()},
            "outputs": {k: str(p) for k, p in self.outputs.items()},
            "metrics_path": None,
            "interactive": True,
        }

    def namespace(self, context: StepContext) -> dict[str, Any]:
        """The variables the step's code uses, as the step notebook defines them."""
        return {
            **{name: saved.value for name, saved in self.variables.items()},
            **self.parameters,
            "context": context,
            "inputs": context.inputs,
            "outputs": context.outputs,
        }


def scratch_dir(store: Store, step: str) -> Path:
    return store.workspace.root / SCRATCH_DIRNAME / step


def bind_step(
    store: Store,
    header: StepHeader,
    registry: PipelineRegistry,
    notebook: Path | None = None,
    namespace: Mapping[str, Any] | None = None,
) -> StepBinding:
    """Resolve a step's inputs and variables and prepare empty scratch outputs.

    A ``--use``d variable that ``namespace`` (the kernel's) lacks is loaded from its
    producer's latest committed result (``binding.variables``); one it has is used as is.
    Every input problem is reported at once (MlpipeError, one line each) and nothing is
    touched then: a mistake never empties the scratch folder of the last good run.
    """
    binding = StepBinding(header, parameters=dict(header.params))
    problems: list[str] = []
    for use in header.uses:
        if namespace is not None and use.name in namespace:
            continue
        try:
            binding.variables[use.name] = latest_saved(store, use.step, use.name, notebook)
        except MlpipeError as exc:
            problems.append(
                f"step '{header.name}', --use {use.describe()}: {use.name!r} is not defined in "
                f"this kernel, and {exc}: run the cell of step '{use.step}' first, or run "
                "the pipeline (`%mlpipe run`)"
            )
    for ref in header.inputs:
        where = f"step '{header.name}', --input {ref.describe()}"
        if isinstance(ref, DatasetInput):
            try:
                version = store.datasets.get(ref.dataset, ref.version)
            except NotFoundError as exc:
                problems.append(f"{where}: {exc}")
                continue
            binding.inputs[ref.name] = version.path
            binding.input_sources[ref.name] = version.identity.split("#")[0]
            continue
        found = upstream_output(store, registry, ref.step, ref.output, notebook)
        if isinstance(found, str):
            problems.append(f"{where}: {found}")
        else:
            binding.inputs[ref.name], binding.input_sources[ref.name] = found
    if problems:
        raise MlpipeError("\n".join(problems))
    scratch = scratch_dir(store, header.name)
    if scratch.exists():
        discard(scratch)
    registry.interactive_results.pop(header.name, None)  # its scratch is gone now
    for output in header.outputs:
        path = scratch / output.name
        path.mkdir(parents=True)
        binding.outputs[output.name] = path
    return binding


def upstream_output(
    store: Store,
    registry: PipelineRegistry,
    step: str,
    output: str,
    notebook: Path | None,
) -> tuple[Path, str] | str:
    """(folder, source) of an upstream step's output, or the sentence saying why there is none.

    The newest wins between the step's last committed result (of this notebook, or of any
    notebook when the kernel does not know its file) and its last interactive run here.
    """
    committed = None
    if store.workspace.db_path.exists():
        committed = store.runs.latest_committed(step, str(notebook) if notebook else None)
    interactive = registry.interactive_results.get(step)
    committed_at = (committed.ended_at or 0.0) if committed else None
    if interactive and (committed_at is None or interactive.finished_at >= committed_at):
        if output not in interactive.outputs:
            known = ", ".join(interactive.outputs) or "none"
            return f"step '{step}' has no output '{output}' (its outputs: {known})"
        return interactive.outputs[output], f"step:{step}.{output}#interactive"
    if committed is not None and committed.result_id:
        path = store.results.path(committed.result_id, output)
        if not path.is_dir():
            return f"step '{step}' has no output '{output}' in run {committed.run_id}"
        return path, f"step:{step}.{output}#{committed.result_id}"
    return f"step '{step}' has no result yet: run step {step} first (or `%mlpipe run`)"


def kernel_notebook() -> Path | None:
    """The notebook this kernel runs (the front-end says which, in the user's namespace:
    ``__main__``'s), else the cells registered here when they were run as a pipeline."""
    main = sys.modules.get("__main__")
    notebook = find_notebook(vars(main) if main is not None else {})
    if notebook is None and interactive_notebook_path().exists():
        notebook = interactive_notebook_path()
    return notebook


def load_variable(ref: str, run: str | None = None,
                  notebook: str | os.PathLike[str] | None = None) -> Any:
    """The variable ``"STEP.NAME"`` as a pipeline run saved it, loaded here.

    ``run``: a run id, a unique prefix or 'latest'; by default the latest run of
    ``notebook`` (default: this kernel's notebook, when known; else any) in which STEP
    succeeded or was reused. Only variables a later step receives are saved
    (``--use STEP.NAME``, or a Kale notebook's flows)::

        from mlpipe_jupyter import load_variable
        df = load_variable("prepare.df")
    """
    step, name = parse_variable_ref(ref)
    where = Path(notebook).resolve() if notebook is not None else kernel_notebook()
    return saved_variable(Store.open(), step, name, run,
                          str(where) if where else None).value


def activate_step(binding: StepBinding, notebook: Path | None = None) -> dict[str, Any]:
    """Make the step's context current (so ``context.log`` works) and return the variables
    to put into the user's namespace."""
    context = activate(binding.context_spec(notebook))
    return binding.namespace(context)


def finish_step(registry: PipelineRegistry, binding: StepBinding, ok: bool) -> None:
    """Remember a successful run's scratch outputs for downstream cells."""
    if ok:
        registry.interactive_results[binding.step] = InteractiveResult(
            dict(binding.outputs), time.time()
        )
    else:
        registry.interactive_results.pop(binding.step, None)


# -- which notebook ----------------------------------------------------------------------------
def find_notebook(
    user_ns: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path | None:
    """The notebook file this kernel runs, when the front-end told the kernel.

    jupyter_server gives the path relative to its root folder, while the kernel runs in the
    notebook's folder: relative paths are tried from the working folder and its parents.
    """
    environ = os.environ if environ is None else environ
    here = (cwd or Path.cwd()).resolve()
    candidates = [user_ns.get(name) for name in NOTEBOOK_VARIABLES]
    candidates.append(environ.get(NOTEBOOK_ENVIRONMENT))
    for value in candidates:
        if not value or not isinstance(value, str) or not value.endswith(".ipynb"):
            continue
        path = Path(value).expanduser()
        tries = [path] if path.is_absolute() else [
            here / path.name, *(folder / path for folder in (here, *here.parents))
        ]
        for candidate in tries:
            if candidate.is_file():
                return candidate.resolve()
    return None


def interactive_notebook_path(cwd: Path | None = None) -> Path:
    return (cwd or Path.cwd()).resolve() / INTERACTIVE_NOTEBOOK_NAME


__all__ = [
    "InteractiveResult",
    "PipelineRegistry",
    "RegisteredCell",
    "SavedVariable",
    "StepBinding",
    "activate_step",
    "bind_step",
    "cell_source",
    "check_setup_line",
    "find_notebook",
    "finish_step",
    "interactive_notebook_path",
    "kernel_notebook",
    "load_variable",
    "parse_header",
    "parse_variable_ref",
    "saved_variable",
    "upstream_output",
]
