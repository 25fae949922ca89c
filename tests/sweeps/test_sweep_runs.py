"""Sweeps run as users run them: real kernels, the real ``mlpipe`` command, one workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.model.sweep import parse_sweep
from mlpipe_jupyter.runner.runner import RunRequest
from mlpipe_jupyter.runner.sweep import SweepRequest, run_sweep
from mlpipe_jupyter.runner.sweep_view import chart_spec, read_sweep
from mlpipe_jupyter.runner.view import read_run
from mlpipe_jupyter.store import Store
from tests.conftest import EXAMPLE, IRIS, run_cli, write_notebook
from tests.sweeps.helpers import executed_steps

pytestmark = pytest.mark.slow




def test_example_sweep_shares_prepare_ranks_members_and_reruns_for_free(
        store: Store, workspace_dir: Path) -> None:
    store.datasets.register("iris", IRIS, tabular=True)
    notebook = workspace_dir / "example.ipynb"
    notebook.write_bytes(EXAMPLE.read_bytes())
    args = ["run", str(notebook), "--sweep", "C=0.01,0.1,1,10", "--sweep", "frac=0.5,0.8",
            "--max-parallel", "2"]
    first = run_cli(*args, cwd=workspace_dir, timeout=600)
    assert first.returncode == 0, first.stderr
    sweep_id = store.sweeps.resolve("latest")
    assert executed_steps(store, sweep_id) == {"prepare": 2, "train": 8, "evaluate": 8}

    view = read_sweep(store, sweep_id, sort="accuracy")
    assert view.parameters == ("C", "frac") and view.sort == "evaluate.accuracy"
    assert sorted((row.params["C"], row.params["frac"]) for row in view.rows) == sorted(
        (c, f) for c in (0.01, 0.1, 1.0, 10.0) for f in (0.5, 0.8))
    for row in view.rows:  # each row is that member's run: its values and its metrics
        run = read_run(store, row.run_id)
        assert run.record is not None and run.record.params["C"] == row.params["C"]
        assert row.metrics["evaluate.accuracy"] == run.step("evaluate").metrics["accuracy"]
    accuracies = [row.metrics["evaluate.accuracy"] for row in view.rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert [row.best for row in view.rows] == [True] + [False] * 7
    # the CLI table marks that same member
    shown = run_cli("sweep", "show", "--sort", "accuracy", cwd=workspace_dir)
    assert shown.returncode == 0, shown.stderr
    best_line = next(line for line in shown.stdout.splitlines() if line.startswith("*  "))
    assert view.rows[0].run_id in best_line
    assert "steps executed by this sweep: prepare 2x, train 8x, evaluate 8x" in shown.stdout
    assert f"sweep {sweep_id}: succeeded, 8 members" in first.stdout

    # a prepare shared between members is the same result, produced by one of them
    prepares = {store.runs.step_run(m.run_id, "prepare").result_id
                for m in store.sweeps.get(sweep_id).members}
    assert len(prepares) == 2
    decision = [store.runs.step_run(m.run_id, "prepare").decision
                for m in store.sweeps.get(sweep_id).members]
    assert sum("which executed it for this sweep" in (d or "") for d in decision) == 6

    again = run_cli(*args, cwd=workspace_dir, timeout=600)
    assert again.returncode == 0, again.stderr
    second = store.sweeps.resolve("latest")
    assert second != sweep_id and executed_steps(store, second) == {}
    assert {step.status for m in store.sweeps.get(second).members
            for step in store.runs.step_runs(m.run_id)} == {StepStatus.REUSED}

    chart = chart_spec(read_sweep(store, second), "evaluate.accuracy", "C")
    assert chart["encoding"]["x"]["title"] == "C" and chart["encoding"]["color"]["title"] == "frac"
    assert len(chart["data"]["values"]) == 8
    assert {v["series"] for v in chart["data"]["values"]} == {"frac=0.5", "frac=0.8"}
    assert chart["encoding"]["x"]["scale"] == {"type": "log"}  # 0.01 .. 10 spans decades


def test_a_failed_member_does_not_stop_the_others(store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "fails.ipynb", [
        "%%mlstep prep --output o --param n=2\n(outputs.o / 'n.txt').write_text(str(n))",
        "%%mlstep work --input i=prep.o --output o --param x=1\n"
        "if x == 3:\n    raise ValueError(f'x={x} is not allowed')\n"
        "context.log('score', x * int((inputs.i / 'n.txt').read_text()))",
    ])
    result = run_sweep(SweepRequest(RunRequest(notebook, max_parallel=2),
                                    parse_sweep(["x=1,2,3,4"])), None)
    assert result.status is RunStatus.FAILED
    statuses = [r.status for _, r in result.members]
    assert statuses == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED, RunStatus.FAILED,
                        RunStatus.SUCCEEDED]
    assert "x=3 is not allowed" in result.failures[0]
    assert executed_steps(store, result.sweep_id) == {"prep": 1, "work": 4}
    view = read_sweep(store, result.sweep_id)
    assert [row.metrics.get("work.score") for row in view.rows] == [2, 4, None, 8]
    assert view.best is not None and view.best.params == {"x": 4}


def test_a_shared_step_that_fails_fails_every_member_once(store: Store,
                                                          workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "broken.ipynb", [
        "%%mlstep prep --output o\nraise RuntimeError('the source is down')",
        "%%mlstep work --input i=prep.o --param x=1\nprint(x)",
    ])
    result = run_sweep(SweepRequest(RunRequest(notebook), parse_sweep(["x=1,2,3"])), None)
    assert [r.status for _, r in result.members] == [RunStatus.FAILED] * 3
    assert executed_steps(store, result.sweep_id) == {"prep": 3}  # recorded failed in each member
    errors = [store.runs.step_run(r.run_id, "prep").error or "" for _, r in result.members]
    assert "the source is down" in errors[0]
    owner = result.members[0][1].run_id
    assert all(f"failed in run {owner} of this sweep" in e and "not run again" in e
               for e in errors[1:])
    assert all(store.runs.step_run(r.run_id, "work").status is StepStatus.SKIPPED
               for _, r in result.members)
    # only the first member's prep ran a kernel: the others have no executed notebook
    assert not store.runs.output_notebook(result.members[1][1].run_id, "prep").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--sweep", "alpha=1,2"], "alpha: not a parameter of"),
    (["--sweep", "C="], "no values for C"),
    (["--sweep", "C=0.1,oops"], "parameter 'C' expects float"),
    (["--sweep", "C=1,2", "-p", "C=3"], "both swept and set with -p"),
    (["--sweep", "C=uniform(0.1,1)"], "--samples N"),
    (["--sweep", "C=" + ",".join(str(i) for i in range(1, 502))], "this sweep has 501 members"),
])
def test_bad_sweeps_stop_before_anything_runs(workspace_dir: Path, args: list[str],
                                              expected: str) -> None:
    notebook = write_notebook(workspace_dir / "nb.ipynb", [
        "%%mlstep train --output o --param C=1.0\nprint(C)"])
    result = run_cli("run", str(notebook), *args, cwd=workspace_dir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "--sweep" in result.stderr
    assert not (workspace_dir / ".mlpipe").exists()  # nothing written, not even a workspace
