"""Reading a notebook (or a list of cell sources) into a Pipeline. No kernel is needed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mlpipe_jupyter.dataflow import resolve_flows
from mlpipe_jupyter.errors import DefinitionError, DefinitionIssue, NotebookError
from mlpipe_jupyter.model.grammar import SETUP_MAGIC, STEP_MAGIC, parse_step_header, split_magic
from mlpipe_jupyter.model.pipeline import Pipeline
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


def read_code_cells(path: Path) -> list[tuple[int, str]]:
    """(1-based cell number, source) of every code cell of a notebook file.

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
    cells: list[tuple[int, str]] = []
    for index, cell in enumerate(data.get("cells", []), start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        cells.append((index, "".join(source) if isinstance(source, list) else str(source)))
    return cells


def _upgrade(text: str, path: Path) -> dict[str, object]:
    import nbformat

    try:
        return dict(nbformat.reads(text, as_version=4))
    except Exception as exc:  # nbformat raises a variety of reader and validation errors
        raise NotebookError(f"{path} is not a readable Jupyter notebook: {exc}") from None


def load_pipeline(path: Path) -> Pipeline:
    """The pipeline a notebook file defines, not yet validated (see ``Pipeline.validate``).

    Raises NotebookError for an unreadable file, DefinitionError for a notebook without steps.
    """
    pipeline = resolve_flows(pipeline_from_cells(read_code_cells(path), source=str(path)))
    if not pipeline.steps and pipeline.parse_issues:
        # step cells whose header could not be read: say why, not "no steps"
        raise DefinitionError(list(pipeline.parse_issues), str(path))
    if not pipeline.steps:
        raise DefinitionError(
            [DefinitionIssue(f"no {STEP_MAGIC} cells: mark a cell as a step with "
                             f"'{STEP_MAGIC} NAME --output OUT'")],
            str(path),
        )
    return pipeline
