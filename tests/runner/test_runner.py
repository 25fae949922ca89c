"""Runner behaviour on small real notebooks: parallelism, failures, selection, reuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe_jupyter.errors import DefinitionError
from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.runner.explain import explain_step
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from tests.conftest import write_notebook

pytestmark = pytest.mark.slow

SETUP = "%%mlsetup\nfrom pathlib import Path\nimport time"


def test_failure_skips_downstream_and_independent_branch_finishes(
    store: Store, workspace_dir: Path
) -> None:
    notebook = write_notebook(workspace_dir / "branches.ipynb", [
        SETUP,
        "%%mlstep bad --output o\nx = 1\nraise ValueError('bad data in row 3')",
        "%%mlstep after_bad --input i=bad.o --output o\nprint('never')",
        "%%mlstep good --output o\n(outputs.o / 'f.txt').write_text('ok')",
        "%%mlstep after_good --input i=good.o --output o\n"
        "(outputs.o / 'g.txt').write_text((inputs.i / 'f.txt').read_text() + '!')",
    ])
    result = run_notebook(notebook, store=store, max_parallel=2)
    assert result.status is RunStatus.FAILED
    assert result.step_status == {
        "bad": StepStatus.FAILED, "after_bad": StepStatus.SKIPPED,
        "good": StepStatus.SUCCEEDED, "after_good": StepStatus.SUCCEEDED,
    }
    [report] = result.failures
    assert "step 'bad' failed in cell 2 (the step's code) of branches.ipynb" in report
    assert "ValueError: bad data in row 3" in report
    output_notebook = store.runs.output_notebook(result.run_id, "bad")
    assert str(output_notebook) in report and output_notebook.exists()
    bad = store.runs.step_run(result.run_id, "bad")
    assert not store.results.exists(bad.result_id or "")  # nothing half-written is kept
    assert not any(store.workspace.staging_dir.iterdir())
    skipped = store.runs.step_run(result.run_id, "after_bad")
    assert "upstream step bad did not succeed" in (skipped.error or "")
    good = store.runs.step_run(result.run_id, "after_good")
    assert (store.results.path(good.result_id or "", "o") / "g.txt").read_text() == "ok!"
    assert store.runs.get_run(result.run_id).status is RunStatus.FAILED


def test_setup_cell_error_points_at_setup_cell(store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "setup.ipynb", [
        "%%mlsetup\nimport not_a_module_anywhere", "%%mlstep a --output o\npass",
    ])
    result = run_notebook(notebook, store=store)
    assert "in %%mlsetup cell 1" in result.failures[0]
    assert "ModuleNotFoundError" in result.failures[0]


def test_independent_steps_overlap_in_time(store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "fan.ipynb", [
        SETUP, *[f"%%mlstep s{i} --output o\ntime.sleep(1.5)" for i in range(3)],
    ])
    result = run_notebook(notebook, store=store, max_parallel=3)
    assert result.ok
    spans = [(s.started_at or 0, s.ended_at or 0) for s in store.runs.step_runs(result.run_id)]
    # every pair of steps ran at the same time at some moment
    for a_start, a_end in spans:
        for b_start, b_end in spans:
            assert a_start < b_end and b_start < a_end


def test_selection_reuse_and_forcing(store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "chain.ipynb", [
        SETUP,
        "%%mlstep a --output o --param n=1\n(outputs.o / 'n').write_text(str(n))",
        "%%mlstep b --input i=a.o --output o\n(outputs.o / 'n').write_text((inputs.i / 'n').read_text() + 'b')",
        "%%mlstep c --input i=b.o --output o\n(outputs.o / 'n').write_text((inputs.i / 'n').read_text() + 'c')",
        "%%mlstep side --output o --no-reuse\n(outputs.o / 'x').write_text('x')",
    ])
    first = run_notebook(notebook, store=store)
    assert first.ok, first.failures

    until = run_notebook(notebook, store=store, until="b")
    assert until.step_status == {"a": StepStatus.REUSED, "b": StepStatus.REUSED,
                                 "c": StepStatus.SKIPPED, "side": StepStatus.SKIPPED}

    partial = run_notebook(notebook, store=store, steps=["b"], downstream=True)
    assert partial.step_status == {"a": StepStatus.REUSED, "b": StepStatus.SUCCEEDED,
                                   "c": StepStatus.SUCCEEDED, "side": StepStatus.SKIPPED}
    assert "selected with --step" in "\n".join(explain_step(store, partial.run_id, "b"))
    assert "input 'i' changed" in "\n".join(explain_step(store, partial.run_id, "c"))

    normal = run_notebook(notebook, store=store)  # reuses the newest results, --no-reuse reruns
    assert normal.step_status == {"a": StepStatus.REUSED, "b": StepStatus.REUSED,
                                  "c": StepStatus.REUSED, "side": StepStatus.SUCCEEDED}
    assert store.runs.step_run(normal.run_id, "c").reused_from == partial.run_id

    regenerated = run_notebook(notebook, store=store, regenerate=True)
    assert set(regenerated.step_status.values()) == {StepStatus.SUCCEEDED}

    with pytest.raises(DefinitionError, match="no step named 'nope'"):
        run_notebook(notebook, store=store, steps=["nope"])


def test_changes_that_rerun_a_step(store: Store, workspace_dir: Path) -> None:
    (workspace_dir / "conf.yaml").write_text("a: 1\n")
    (workspace_dir / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    data = workspace_dir / "raw"
    data.mkdir()
    (data / "v.txt").write_text("1")
    store.datasets.register("raw", data)
    notebook = write_notebook(workspace_dir / "changes.ipynb", [
        "%%mlstep a --input r=dataset:raw --output o --hash-paths conf.yaml\n"
        "import helpers\n(outputs.o / 'v').write_text(str(helpers.double(int((inputs.r / 'v.txt').read_text()))))",
    ])
    assert run_notebook(notebook, store=store).ok
    (workspace_dir / "conf.yaml").write_text("a: 2\n")
    (workspace_dir / "helpers.py").write_text("def double(x):\n    return x + x\n")
    (data / "v.txt").write_text("2")
    store.datasets.register("raw", data)
    result = run_notebook(notebook, store=store)
    assert result.step_status["a"] is StepStatus.SUCCEEDED
    why = "\n".join(explain_step(store, result.run_id, "a"))
    assert "file 'conf.yaml' changed" in why
    assert "file 'helpers.py' changed" in why
    assert "input 'r' changed: dataset:raw@v1" in why
    out = store.results.path(store.runs.step_run(result.run_id, "a").result_id or "", "o")
    assert (out / "v").read_text() == "4"


def test_timeout_and_retries(store: Store, workspace_dir: Path) -> None:
    marker = workspace_dir / "attempts.txt"
    notebook = write_notebook(workspace_dir / "limits.ipynb", [
        SETUP,
        "%%mlstep slow --output o --timeout 2s\ntime.sleep(60)",
        f"%%mlstep flaky --output o --retries 2\np = Path({str(marker)!r})\n"
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x')\n"
        "assert len(p.read_text()) >= 2, 'first attempt fails'",
    ])
    result = run_notebook(notebook, store=store, max_parallel=2)
    assert result.step_status["slow"] is StepStatus.FAILED
    assert "timed out after 2 s" in store.runs.step_run(result.run_id, "slow").error  # type: ignore[operator]
    assert result.step_status["flaky"] is StepStatus.SUCCEEDED
    assert store.runs.step_run(result.run_id, "flaky").attempts == 2
    assert marker.read_text() == "xx"
