"""Kale-format notebooks written with nbformat, for the tests of this folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat

# a cell: source, or (source, tags), or ("markdown", text) as ("#md", text)
Cell = str | tuple[str, Sequence[str]]


def kale_notebook(path: Path, cells: Sequence[Cell], kale: dict[str, Any] | None = None,
                  markdown: dict[int, str] | None = None) -> Path:
    """A notebook file whose code cells are ``cells`` (source, tags); ``markdown`` inserts a
    markdown cell before the code cell of that index; ``kale`` is ``kubeflow_notebook``."""
    notebook = nbformat.v4.new_notebook()
    for index, cell in enumerate(cells):
        if markdown and index in markdown:
            notebook.cells.append(nbformat.v4.new_markdown_cell(markdown[index]))
        source, tags = (cell, ()) if isinstance(cell, str) else cell
        code = nbformat.v4.new_code_cell(source)
        if tags:
            code.metadata["tags"] = list(tags)
        notebook.cells.append(code)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    if kale is not None:
        notebook.metadata["kubeflow_notebook"] = kale
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(path))
    return path
