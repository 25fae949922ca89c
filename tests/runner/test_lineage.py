"""Dataset lineage and previews as the JupyterLab datasets view reads them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlpipe_jupyter.runner.lineage import dataset_history, list_datasets, preview, run_lineage
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from tests.conftest import write_notebook


def test_preview_keeps_odd_dtypes_and_missing_values(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    frame = pd.DataFrame({
        "when": pd.to_datetime(["2026-01-01", None, "2026-03-01"]),
        "kind": pd.Categorical(["a", "b", "a"]),
        "x": [1.5, float("nan"), 3.0],
        "n": pd.array([1, None, 3], dtype="Int64"),
        "naïve ✓": ["é", "ü", None],
    })
    frame.to_parquet(folder / "part.parquet")
    store.datasets.register("odd", folder, tabular=True)
    shown = preview(store, "odd")
    table = shown["table"]
    assert table["columns"] == ["when", "kind", "x", "n", "naïve ✓"]
    assert table["dtypes"][0].startswith("datetime64") and table["dtypes"][1] == "category"
    assert table["rows"][1] == [None, "b", None, None, "ü"]
    assert shown["file_list"] == [{"path": "part.parquet",
                                   "bytes": (folder / "part.parquet").stat().st_size}]
    assert list_datasets(store)[0]["produced_by"] is None  # registered by hand


def test_a_run_reads_and_writes_versions_with_their_producer(store: Store,
                                                             workspace_dir: Path) -> None:
    source = workspace_dir / "in.csv"
    source.write_text("a,b\n1,2\n")
    store.datasets.register("raw", source, tabular=True)
    notebook = write_notebook(workspace_dir / "nb.ipynb", [
        "%%mlstep copy --input r=dataset:raw --output out=dataset:copied\n"
        "import shutil\nshutil.copy(inputs.r / 'in.csv', outputs.out / 'copy.csv')"])
    result = run_notebook(notebook, store=store)
    assert result.ok, result.failures
    lineage = run_lineage(store, result.run_id)
    assert lineage["read"] == [{"step": "copy", "input": "r", "dataset": "raw", "version": 1}]
    assert lineage["written"] == [{"step": "copy", "output": "out", "dataset": "copied",
                                   "version": 1}]
    (version,) = dataset_history(store, "copied")
    assert version["produced_by"] == {"run_id": result.run_id, "step": "copy", "output": "out"}
    # a step's output of CSV files is tabular too: its first rows show
    assert preview(store, "copied")["table"]["rows"] == [["1", "2"]]
