"""A published Kale notebook: its snapshot is read with Kale's tags, as ``load_pipeline`` does."""

from __future__ import annotations

from pathlib import Path

from mlpipe_jupyter.model.pipeline import KALE
from mlpipe_jupyter.scheduling.publishing import load_published_pipeline, publish
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.validation import validate_trigger
from tests.kale.helpers import kale_notebook

CELLS = [
    ("n = 2", ["pipeline-parameters"]),
    ("x = n * 2", ["step:a"]),
    ("y = 1", ["step:b", "prev:a"]),
]


def test_publish_and_trigger_a_kale_notebook(store: Store, workspace_dir: Path) -> None:
    notebook = kale_notebook(workspace_dir / "k.ipynb", CELLS, kale={"experiment_name": "e"})
    published, created = publish(store, notebook, "kale")
    assert created
    pipeline = load_published_pipeline(published)
    assert pipeline.kind == KALE and pipeline.source == "kale@v1"
    assert pipeline.step_names == ["a", "b"] and pipeline.upstream("b") == {"a"}
    assert pipeline.step("a").header.params == (("n", 2),)
    _, values = validate_trigger(store, "kale", parameters={"n": "5"})
    assert values["n"] == 5

    # the same content publishes nothing; a changed tag is a new version
    assert publish(store, notebook, "kale")[1] is False
    kale_notebook(notebook, [*CELLS[:2], ("y = 1", ["step:b", "prev:a", "cache:disabled"])],
                  kale={"experiment_name": "e"})
    again, created = publish(store, notebook, "kale")
    assert created and again.version == 2
    assert load_published_pipeline(again).step("b").header.allow_reuse is False
