"""``mlpipe convert``: a Kale-tagged notebook written as the equivalent ``%%mlstep`` notebook.

The imports and functions cells become ``%%mlsetup`` cells; each step becomes one code cell,
its ``%%mlstep`` line saying what the Kale tags said (``--after`` for ``prev:``, ``--param``
for the pipeline parameters the step uses, ``--use`` for the variables it receives,
``--image``, ``--cpus``/``--memory``/``--gpus``, ``--no-reuse``, ``--label``,
``--annotation``, ``--secret`` for ``secret:NAME:KEY:ENV``) and its code the cells Kale merged into it, metric logging included.
Markdown and raw cells stay where they were; the other code cells (merged, skipped, the
parameters and metrics cells) are not repeated. The notebook's metadata is kept except
``kubeflow_notebook``; what has no ``%%mlstep`` equivalent (the experiment, resource limits
mlpipe does not apply, parameters no step uses) is written down in a first markdown note.
``load_pipeline`` of the result gives the same steps, edges, parameters and code.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import uuid
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import NotebookError
from mlpipe_jupyter.kale import METADATA_KEY
from mlpipe_jupyter.model.grammar import SETUP_MAGIC, STEP_MAGIC
from mlpipe_jupyter.model.pipeline import KALE, Pipeline
from mlpipe_jupyter.model.step import Step
from mlpipe_jupyter.model.values import python_literal
from mlpipe_jupyter.notebook import NotebookCell, pipeline_from_notebook, read_notebook


def step_line(step: Step, pipeline: Pipeline) -> str:
    """The ``%%mlstep`` line that says what ``step``'s header says."""
    header = step.header
    words = [STEP_MAGIC, header.name]
    received = pipeline.flows_into(step.name)
    # a step it receives variables from needs no --after as well
    after = [other for other in header.after if other not in {f.producer for f in received}]
    if after:
        words += ["--after", *after]
    if received:
        words += ["--use", *(f"{flow.producer}.{flow.name}" for flow in received)]
    for name, value in header.params:
        words += ["--param", _quoted(f"{name}={python_literal(value)}")]
    if header.image:
        words += ["--image", _quoted(header.image)]
    resources = header.resources
    if resources.cpus is not None:
        words += ["--cpus", repr(resources.cpus)]
    if resources.memory_bytes is not None:
        words += ["--memory", str(resources.memory_bytes)]
    if resources.gpus is not None:
        words += ["--gpus", str(resources.gpus)]
    if not header.allow_reuse:
        words.append("--no-reuse")
    for key, value in header.labels:
        words += ["--label", _quoted(f"{key}={value}")]
    for key, value in header.annotations:
        words += ["--annotation", _quoted(f"{key}={value}")]
    for use in header.secrets:
        words += ["--secret", use.describe()]
    return " ".join(words)


def _quoted(word: str) -> str:
    """One shell word, as a person would quote it: ``"grid={'a': 1}"`` rather than
    shlex's ``'grid={'"'"'a'"'"': 1}'`` when double quotes need no escapes."""
    quoted = shlex.quote(word)
    if quoted == word or "'" not in word or any(c in word for c in '"\\$`'):
        return quoted
    return f'"{word}"'


def _code_cell(source: str) -> dict[str, Any]:
    return {"cell_type": "code", "execution_count": None, "id": uuid.uuid4().hex[:8],
            "metadata": {}, "outputs": [], "source": source}


def _markdown_cell(source: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "id": uuid.uuid4().hex[:8], "metadata": {},
            "source": source}


def _note(pipeline: Pipeline, path: Path) -> str:
    lines = [f"*Converted from the Kale notebook `{path.name}` by `mlpipe convert`.*"]
    if pipeline.experiment:
        lines.append(f"\nKale experiment: `{pipeline.experiment}` (run with "
                     f"`mlpipe run NB --experiment {shlex.quote(pipeline.experiment)}` to "
                     "record runs under it).")
    unused = _unused_parameters(pipeline)
    if unused:
        lines.append("\nKale pipeline parameters no step uses (not declared here):\n")
        lines += ["```python", *unused, "```"]
    not_applied = [(step.name, resource, value) for step in pipeline.steps
                   for resource, value in step.header.other_limits]
    if not_applied:
        lines.append("\nKale resource limits mlpipe does not apply:")
        lines += [f"- step `{name}`: `{resource}` = `{value}`" for name, resource, value
                  in not_applied]
    return "\n".join(lines)


def _unused_parameters(pipeline: Pipeline) -> list[str]:
    used = {name for step in pipeline.steps for name, _ in step.header.params}
    return [f"{name} = {python_literal(value)}"
            for name, value in pipeline.declared_parameters if name not in used]


def converted_notebook(path: Path) -> dict[str, Any]:
    """The ``%%mlstep`` notebook (as nbformat-4 JSON) equivalent to Kale notebook ``path``.

    Raises NotebookError when ``path`` is not a Kale notebook, DefinitionError (every issue)
    when its pipeline is not valid."""
    content = read_notebook(path)
    pipeline = pipeline_from_notebook(content, source=str(path))
    if pipeline.kind != KALE:
        what = (f"already a {STEP_MAGIC} notebook" if pipeline.steps
                else "not a Kale notebook (no cell has Kale tags such as step:NAME)")
        raise NotebookError(f"{path} is {what}: nothing to convert")
    if not pipeline.steps:
        pipeline.validate()  # the tag mistakes that left it without steps
        raise NotebookError(f"{path} has no Kale step (no cell tagged step:NAME)")
    pipeline.validate()
    setup_cells = {item.cell: item for item in pipeline.setup}
    step_cells = {step.cell: step for step in pipeline.steps}
    cells: list[dict[str, Any]] = [_markdown_cell(_note(pipeline, path))]
    for cell in content.cells:
        source: str | None = None
        if cell.number in setup_cells:
            source = f"{SETUP_MAGIC}\n{setup_cells[cell.number].code}"
        elif cell.number in step_cells:
            step = step_cells[cell.number]
            source = f"{step_line(step, pipeline)}\n{step.code}"
        elif cell.cell_type != "code":
            cells.append(_kept_cell(cell))
            continue
        if source is None:
            continue
        cells.append(_code_cell(source))
    metadata = {key: value for key, value in content.metadata.items() if key != METADATA_KEY}
    return {"cells": cells, "metadata": metadata, "nbformat": 4,
            "nbformat_minor": max(content.nbformat_minor, 5)}


def _kept_cell(cell: NotebookCell) -> dict[str, Any]:
    kept = dict(cell.raw)
    kept.setdefault("id", uuid.uuid4().hex[:8])
    return kept


def convert(path: Path, output: Path, force: bool = False) -> Pipeline:
    """Write the ``%%mlstep`` equivalent of Kale notebook ``path`` to ``output`` (atomically;
    an existing ``output`` only with ``force``); returns the pipeline ``output`` defines."""
    if output.exists() and not force:
        raise NotebookError(f"{output} exists: give --force to overwrite it")
    if output.resolve() == path.resolve():
        raise NotebookError(f"{output} is the notebook being converted: write to another file")
    notebook = converted_notebook(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp",
                                         dir=output.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(notebook, stream, indent=1, ensure_ascii=False)
            stream.write("\n")
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return pipeline_from_notebook(read_notebook(output), source=str(output))


__all__ = ["convert", "converted_notebook", "step_line"]
