"""The shipped example, run as a user runs it: real kernels, real papermill, real store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.runner.explain import explain_step
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from tests.conftest import EXAMPLE, IRIS, REPO

pytestmark = pytest.mark.slow

KALE_EXAMPLE = REPO / "notebooks" / "kale_example.ipynb"
KALE_STEPS = ("load", "clean", "sample", "split", "logistic", "forest", "knn", "pick")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_example_runs_reuses_and_explains(store: Store, workspace_dir: Path) -> None:
    store.datasets.register("iris", IRIS, tabular=True)
    before = _digest(EXAMPLE)

    first = run_notebook(EXAMPLE, {"frac": "0.5"}, store=store)
    assert first.status is RunStatus.SUCCEEDED, first.failures
    assert first.step_status == {n: StepStatus.SUCCEEDED for n in ("prepare", "train", "evaluate")}
    assert _digest(EXAMPLE) == before, "the source notebook must never be modified"

    steps = {s.step: s for s in store.runs.step_runs(first.run_id)}
    report = store.results.path(steps["evaluate"].result_id or "", "report") / "metrics.json"
    accuracy = json.loads(report.read_text())["accuracy"]
    assert 0.8 <= accuracy <= 1.0
    metrics = {m["name"]: m["value"] for m in store.runs.metrics(first.run_id)}
    assert metrics["accuracy"] == accuracy and "train_accuracy" in metrics
    for name in steps:  # one executed notebook per step per run, with the injected parameters
        executed = json.loads(store.runs.output_notebook(first.run_id, name).read_text())
        tags = [t for c in executed["cells"] for t in c["metadata"].get("tags", [])]
        assert "parameters" in tags and "mlpipe-step" in tags
    prepare_nb = json.loads(store.runs.output_notebook(first.run_id, "prepare").read_text())
    injected = [c for c in prepare_nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert "frac = 0.5" in "".join(injected[0]["source"])
    assert "training rows" in store.runs.log_path(first.run_id, "prepare").read_text()
    model = store.datasets.get("iris_model")  # the registered output became a dataset version
    assert model.version == 1 and (model.path / "model.pkl").is_file()

    second = run_notebook(EXAMPLE, {"frac": "0.5"}, store=store)
    assert set(second.step_status.values()) == {StepStatus.REUSED}
    again = {s.step: s for s in store.runs.step_runs(second.run_id)}
    assert again["evaluate"].result_id == steps["evaluate"].result_id  # same folder: no copy
    assert again["evaluate"].reused_from == first.run_id
    assert store.datasets.get("iris_model").version == 1  # nothing new to register
    assert "nothing changed" in "\n".join(explain_step(store, second.run_id, "train"))

    third = run_notebook(EXAMPLE, {"frac": "0.6"}, store=store)
    assert third.step_status["prepare"] is StepStatus.SUCCEEDED
    why = "\n".join(explain_step(store, third.run_id, "prepare"))
    assert "parameter 'frac' changed: 0.5 -> 0.6" in why
    why_train = "\n".join(explain_step(store, third.run_id, "train"))
    assert "input 'data' changed" in why_train
    assert store.datasets.get("iris_model").version == 2


def test_registered_dataset_loads_as_dataframe(store: Store) -> None:
    version, created = store.datasets.register("iris", IRIS, tabular=True)
    assert created and version.ref == "iris@v1" and version.kind == "tabular"
    frame = version.to_pandas()
    assert frame.shape == (150, 5)
    again, created_again = store.datasets.register("iris", IRIS, tabular=True)
    assert not created_again and again.version == 1


def test_kale_example_runs_and_reuses(store: Store) -> None:
    """The Kale-format example (tags only, its CSV read relative to the notebook): every step
    runs, the models receive the same frames, the metrics are logged; a re-run reuses all."""
    before = _digest(KALE_EXAMPLE)
    first = run_notebook(KALE_EXAMPLE, store=store)
    assert first.status is RunStatus.SUCCEEDED, first.failures
    assert first.step_status == {n: StepStatus.SUCCEEDED for n in KALE_STEPS}
    assert _digest(KALE_EXAMPLE) == before, "the source notebook must never be modified"
    metrics = {m["name"]: m["value"] for m in store.runs.metrics(first.run_id)}
    models = [metrics[f"{name}_accuracy"] for name in ("logistic", "forest", "knn")]
    assert metrics["best_accuracy"] == max(models) and 0.6 <= max(models) <= 1.0
    assert "best: " in store.runs.log_path(first.run_id, "pick").read_text()
    assert store.runs.get_run(first.run_id).experiment == "iris-kale"

    second = run_notebook(KALE_EXAMPLE, store=store)
    assert second.step_status == {n: StepStatus.REUSED for n in KALE_STEPS}
