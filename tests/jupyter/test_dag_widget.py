"""The DAG widget's state, layers and ES module (no kernels)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from mlpipe_jupyter.events import RUN_STARTED, STEP_STATUS, EventBus, RunEvent
from mlpipe_jupyter.jupyter.widget import DagWidget, watch_run
from mlpipe_jupyter.model.pipeline import layers_of

ESM = Path(__file__).resolve().parents[2] / "mlpipe_jupyter" / "jupyter" / "widget.js"


def test_layers_follow_the_longest_path() -> None:
    upstream = {"a": [], "b": ["a"], "c": ["a", "b"], "d": [], "e": ["d", "c"]}
    assert layers_of(upstream) == {"a": 0, "b": 1, "c": 2, "d": 0, "e": 3}


def test_widget_state_and_text_summary() -> None:
    widget = DagWidget()
    assert widget.summary() == "mlpipe run: not started"
    widget.set_state({"run_id": "r1", "status": "running", "notebook": "n.ipynb", "steps": [
        {"name": "prepare", "status": "succeeded", "duration": 1.25},
        {"name": "train", "status": "running", "duration": None},
    ]})
    assert widget.summary() == "run r1: running\n  prepare: succeeded 1.2s\n  train: running"
    synced = widget.get_state()
    assert synced["run_id"] == "r1" and len(synced["steps"]) == 2
    assert "export{" in synced["_esm"] and " as default}" in synced["_esm"]  # esbuild's form


def test_widget_follows_events_before_steps_finish() -> None:
    events = EventBus()
    widget = DagWidget()
    # the store is only opened when a step ends: statuses alone need none
    watch_run(widget, events, store=lambda: (_ for _ in ()).throw(AssertionError("no store")))
    events.emit(RunEvent(RUN_STARTED, "r1", "running", detail={
        "notebook": "n.ipynb", "steps": ["a", "b"], "upstream": {"a": [], "b": ["a"]}}))
    events.emit(RunEvent(STEP_STATUS, "r1", "running", "a", {"started_at": 1.0}))
    assert [(s["name"], s["status"], s["layer"]) for s in widget.steps] == [
        ("a", "running", 0), ("b", "queued", 1)]
    assert widget.steps[1]["upstream"] == ["a"]


def test_es_module_parses() -> None:
    node = shutil.which("node")
    assert node, "node is needed to check the widget's ES module"
    checked = subprocess.run(
        [node, "--input-type=module", "--check"], input=ESM.read_text(), text=True,
        capture_output=True, check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_es_module_exports_render_and_is_built_from_the_shared_renderer() -> None:
    """widget.js is the esbuild bundle of labextension/src/widget.ts (with dag.ts, the run
    view's renderer, and dagre): its default export has anywidget's ``render``."""
    node = shutil.which("node")
    assert node, "node is needed to check the widget's ES module"
    text = ESM.read_text()
    assert text.startswith("// mlpipe's notebook DAG widget") and "GENERATED" in text
    assert "Chris Pettitt" in text  # dagre's licence travels with the bundle
    loaded = subprocess.run(
        [node, "--input-type=module", "-e",
         f"const m = await import({ESM.as_uri()!r}); console.log(typeof m.default.render)"],
        text=True, capture_output=True, check=False,
    )
    assert loaded.stdout.strip() == "function", loaded.stderr
