"""Reading a notebook (or a list of cell sources) into a Pipeline. No kernel is needed.

A notebook is a pipeline of ``%%mlstep`` cells, or, when it has none and its cells carry
Kubeflow Kale's tags, a Kale pipeline (``kale.py``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlpipe_jupyter.dataflow import resolve_flows
from mlpipe_jupyter.errors import DefinitionError, DefinitionIssue, NotebookError
from mlpipe_jupyter.kale import has_kale_tags, is_step_tag, pipeline_from_kale
from mlpipe_jupyter.model.grammar import SETUP_MAGIC, STEP_MAGIC, parse_step_header, split_magic
from mlpipe_jupyter.model.pipeline import KALE, Pipeline
from mlpipe_jupyter.model.step import SetupCell, Step


def pipeline_from_cells(
    cells: Sequence[tuple[int | None, str]], source: str | None = None
) -> Pipeline:
    """Build a pipeline from (cell number, code) pairs. Cells without a pipeline magic are
    ignored. Header mistakes are kept in ``parse_issues``: ``Pipeline.validate`` reports
    them together with the structural ones, all at once."""
    steps: list[Step] = []
    setup: list[SetupCell] = []
    issues: list[DefinitionIssue] = []
    for number, code in cells:
        magic, header_line, body = split_magic(code)
        if magic == SETUP_MAGIC:
            if header_line:
                issues.append(
                    DefinitionIssue(f"{SETUP_MAGIC} takes no options (got {header_line!r})",
                                    cell=number)
                )
            setup.append(SetupCell(code=body, cell=number))
        elif magic == STEP_MAGIC:
            parsed = parse_step_header(header_line, cell=number)
            issues.extend(parsed.issues)
            if parsed.header is not None:
                steps.append(Step(header=parsed.header, code=body, cell=number))
    return Pipeline(
        steps=tuple(steps), setup=tuple(setup), source=source, parse_issues=tuple(issues)
    )


@dataclass(frozen=True)
class NotebookCell:
    """One cell of a notebook file: its 1-based number, type, source and tags (``raw`` is the
    cell as stored, for tools that write notebooks)."""

    number: int
    cell_type: str
    source: str
    tags: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class NotebookContent:
    """A notebook file's cells (every type, in order) and its metadata."""

    cells: tuple[NotebookCell, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    nbformat_minor: int = 5

    @property
    def code_cells(self) -> list[NotebookCell]:
        return [cell for cell in self.cells if cell.cell_type == "code"]


def read_notebook(path: Path) -> NotebookContent:
    """A notebook file's cells and metadata.

    nbformat 4 notebooks are read as plain JSON: importing nbformat costs 0.6-2.5 s (its
    jsonschema stack), which would dominate a no-op re-run. Older formats go through
    nbformat's converter.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotebookError(f"notebook {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NotebookError(f"cannot read notebook {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(f"{path} is not a Jupyter notebook (invalid JSON: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells", []), list):
        raise NotebookError(f"{path} is not a Jupyter notebook (no list of cells)")
    if data.get("nbformat") != 4:
        data = _upgrade(text, path)
    cells: list[NotebookCell] = []
    for index, cell in enumerate(data.get("cells", []), start=1):
        if not isinstance(cell, dict):
            continue
        source = cell.get("source", "")
        metadata = cell.get("metadata")
        tags = metadata.get("tags") if isinstance(metadata, dict) else None
        cells.append(NotebookCell(
            number=index,
            cell_type=str(cell.get("cell_type", "")),
            source="".join(source) if isinstance(source, list) else str(source),
            tags=tuple(tags) if isinstance(tags, list) else (),
            raw=cell,
        ))
    metadata = data.get("metadata")
    minor = data.get("nbformat_minor")
    return NotebookContent(tuple(cells), metadata if isinstance(metadata, dict) else {},
                           minor if isinstance(minor, int) else 5)


def read_code_cells(path: Path) -> list[tuple[int, str]]:
    """(1-based cell number, source) of every code cell of a notebook file."""
    return [(cell.number, cell.source) for cell in read_notebook(path).code_cells]


def pipeline_from_notebook(content: NotebookContent, source: str | None = None) -> Pipeline:
    """The pipeline of a notebook's content, ``%%mlstep`` cells or Kale tags, with its
    variable flows resolved. Not validated, and not checked to have steps."""
    code = content.code_cells
    mlstep = [c for c in code if split_magic(c.source)[0] == STEP_MAGIC]
    if mlstep or not has_kale_tags(code):
        pipeline = pipeline_from_cells([(c.number, c.source) for c in code], source=source)
        kale_steps = [(c, tag) for c in code for tag in c.tags if is_step_tag(tag)]
        if mlstep and kale_steps:
            cell, tag = kale_steps[0]
            issue = DefinitionIssue(
                f"this notebook has {STEP_MAGIC} cells (cell {mlstep[0].number}) and Kale "
                f"step tags: use one or the other (`mlpipe convert` turns a Kale notebook "
                f"into {STEP_MAGIC} cells; or remove the tags)", cell=cell.number,
                field=f"tag {tag!r}")
            pipeline = replace(pipeline, parse_issues=(*pipeline.parse_issues, issue))
    else:
        pipeline = pipeline_from_kale(code, content.metadata, source=source)
    return resolve_flows(pipeline)


def _upgrade(text: str, path: Path) -> dict[str, object]:
    import nbformat

    try:
        return dict(nbformat.reads(text, as_version=4))
    except Exception as exc:  # nbformat raises a variety of reader and validation errors
        raise NotebookError(f"{path} is not a readable Jupyter notebook: {exc}") from None


# a Kale step tag as it appears in a notebook file's JSON ("tags": ["step:train", ...])
_KALE_STEP_TAG = re.compile(r'"(?:step|block):[^"]+"')


def may_define_pipeline(text: str) -> bool:
    """Whether a notebook file's text may define a pipeline: it has ``%%mlstep`` cells or
    Kale step tags. A cheap filter for listing notebooks; ``load_pipeline`` decides."""
    return STEP_MAGIC in text or _KALE_STEP_TAG.search(text) is not None


def load_pipeline(path: Path) -> Pipeline:
    """The pipeline a notebook file defines, not yet validated (see ``Pipeline.validate``).

    Raises NotebookError for an unreadable file, DefinitionError for a notebook without steps.
    """
    pipeline = pipeline_from_notebook(read_notebook(path), source=str(path))
    if not pipeline.steps and pipeline.parse_issues:
        # step cells whose header could not be read: say why, not "no steps"
        raise DefinitionError(list(pipeline.parse_issues), str(path))
    if not pipeline.steps:
        message = (f"no {STEP_MAGIC} cells: mark a cell as a step with "
                   f"'{STEP_MAGIC} NAME --output OUT'")
        if pipeline.kind == KALE:
            message = "no steps: this Kale notebook has no cell tagged step:NAME"
        raise DefinitionError([DefinitionIssue(message)], str(path))
    return pipeline
