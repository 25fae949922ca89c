"""Conditional steps on real kernels: an alert step (--run-if any_failed), a clean-up step
(--run-if all_done) and a gated deploy step (--if), with the condition true and false and
with a failing step; statuses, reasons, `mlpipe why`, and what a re-run reuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.runner.explain import explain_step
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.runner.view import read_run
from mlpipe_jupyter.store import Store
from tests.conftest import step_output, write_notebook

pytestmark = pytest.mark.slow

S, F, K, R = StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.REUSED
CONDITION = "evaluate.accuracy >= 0.9 and target == 'prod'"


def gated_notebook(folder: Path) -> Path:
    return write_notebook(folder / "gated.ipynb", [
        "%%mlstep train --output model --param quality=0.93 --param fail=False\n"
        "if fail:\n    raise RuntimeError('training diverged')\n"
        "(outputs.model / 'q.txt').write_text(str(quality))",
        "%%mlstep evaluate --input m=train.model\n"
        "context.log('accuracy', 0.1)  # the last value logged counts\n"
        "context.log('accuracy', float((inputs.m / 'q.txt').read_text()))",
        f"%%mlstep deploy --input m=train.model --output release --param target=prod "
        f"--if \"{CONDITION}\"\n"
        "(outputs.release / 'to.txt').write_text(target)",
        "%%mlstep announce --input r=deploy.release --output note\n"
        "(outputs.note / 'n.txt').write_text('deployed')",
        "%%mlstep alert --input m=train.model --after evaluate --output report "
        "--run-if any_failed\n"
        "(outputs.report / 'r.txt').write_text(f'model: {inputs.m}; '\n"
        "    + repr(context.missing_inputs))",
        "%%mlstep cleanup --input m=train.model --after announce --output log --run-if all_done\n"
        "(outputs.log / 'c.txt').write_text('model present' if inputs.m is not None "
        "else 'no model')",
        "%%mlstep archive --input c=cleanup.log --output box\n"
        "(outputs.box / 'a.txt').write_text((inputs.c / 'c.txt').read_text())",
    ])


def statuses(result) -> dict[str, StepStatus]:  # type: ignore[no-untyped-def]
    return dict(result.step_status)


def test_gated_alert_and_cleanup_steps(store: Store, workspace_dir: Path) -> None:
    notebook = gated_notebook(workspace_dir)

    # the condition is true: deploy runs, the alert is skipped, clean-up runs as usual
    good = run_notebook(notebook, store=store, max_parallel=2)
    assert good.status is RunStatus.SUCCEEDED, good.failures
    assert statuses(good) == {"train": S, "evaluate": S, "deploy": S, "announce": S,
                              "alert": K, "cleanup": S, "archive": S}
    why = "\n".join(explain_step(store, good.run_id, "deploy"))
    assert f"condition {CONDITION} is true (evaluate.accuracy = 0.93, target = 'prod')" in why
    alert = store.runs.step_run(good.run_id, "alert")
    assert alert.error == "no upstream step failed (run-if any_failed)"
    assert "run-if: any_failed" in "\n".join(explain_step(store, good.run_id, "alert"))
    cleanup = store.runs.step_run(good.run_id, "cleanup")
    assert cleanup.result_id == cleanup.fingerprint  # all went well: an ordinary result
    view = read_run(store, good.run_id)
    assert view.step("deploy").condition == CONDITION
    assert (view.step("deploy").condition_result or "").endswith("is true "
                                                                 "(evaluate.accuracy = 0.93, "
                                                                 "target = 'prod')")
    assert view.step("alert").run_if == "any_failed" and view.step("announce").run_if is None

    # a re-run reuses everything that ran, the gated step too; the alert is skipped again
    again = run_notebook(notebook, store=store, max_parallel=2)
    assert statuses(again) == {"train": R, "evaluate": R, "deploy": R, "announce": R,
                               "alert": K, "cleanup": R, "archive": R}
    why = "\n".join(explain_step(store, again.run_id, "deploy"))
    assert f"reused the result of run {good.run_id}" in why
    assert f"condition {CONDITION} is true (evaluate.accuracy = 0.93" in why  # producer's metric

    # the condition is false: deploy and the step below it are skipped with the reason; the
    # run succeeds; clean-up runs (all_done) but its result is kept for this run only
    low = run_notebook(notebook, {"quality": "0.85"}, store=store, max_parallel=2)
    assert low.status is RunStatus.SUCCEEDED, low.failures
    assert statuses(low) == {"train": S, "evaluate": S, "deploy": K, "announce": K,
                             "alert": K, "cleanup": S, "archive": S}
    false = f"condition {CONDITION} is false (evaluate.accuracy = 0.85, target = 'prod')"
    deploy = store.runs.step_run(low.run_id, "deploy")
    assert deploy.error == false
    why = explain_step(store, low.run_id, "deploy")
    assert why[:3] == [f"step 'deploy' in run {low.run_id}: skipped",
                       "decision: skipped because its condition is false", f"  {false}"]
    assert store.runs.step_run(low.run_id, "announce").error == (
        f"upstream step deploy was skipped: {false}")
    cleanup = store.runs.step_run(low.run_id, "cleanup")
    assert cleanup.result_id == f"{cleanup.fingerprint}-{low.run_id}"
    assert "run-if all_done: runs although upstream step announce skipped" in (
        cleanup.decision or "")
    assert (step_output(store, low.run_id, "cleanup", "log") / "c.txt").read_text() == \
        "model present"
    # the step below it read that result, under a fingerprint of its own
    archive = store.runs.step_run(low.run_id, "archive")
    assert cleanup.result_id in (archive.components or {})["inputs"]["c"]
    assert archive.result_id == archive.fingerprint
    assert (step_output(store, low.run_id, "archive", "box") / "a.txt").read_text() == \
        "model present"

    # the same again: the skipped steps are skipped again, clean-up is never reused
    low2 = run_notebook(notebook, {"quality": "0.85"}, store=store, max_parallel=2)
    assert statuses(low2) == {"train": R, "evaluate": R, "deploy": K, "announce": K,
                              "alert": K, "cleanup": S, "archive": S}
    assert (store.runs.step_run(low2.run_id, "cleanup").result_id or "").endswith(low2.run_id)

    # a failing step: the alert runs without the failed step's output (None in the step);
    # clean-up too; the run is still failed
    bad = run_notebook(notebook, {"fail": "True"}, store=store, max_parallel=2)
    assert bad.status is RunStatus.FAILED
    assert statuses(bad) == {"train": F, "evaluate": K, "deploy": K, "announce": K,
                             "alert": S, "cleanup": S, "archive": S}
    assert len(bad.failures) == 1 and "training diverged" in bad.failures[0]
    assert store.runs.step_run(bad.run_id, "deploy").error == \
        "upstream step evaluate, train did not succeed"  # unchanged wording for failures
    report = (step_output(store, bad.run_id, "alert", "report") / "r.txt").read_text()
    assert report == "model: None; {'m': 'upstream step train failed'}"
    assert (step_output(store, bad.run_id, "cleanup", "log") / "c.txt").read_text() == "no model"
    alert = store.runs.step_run(bad.run_id, "alert")
    assert alert.result_id == f"{alert.fingerprint}-{bad.run_id}"
    why = "\n".join(explain_step(store, bad.run_id, "alert"))
    assert "run-if any_failed: runs although upstream step evaluate skipped, train failed" in why

    # the failure again: the alert runs again (its result is never reused)
    bad2 = run_notebook(notebook, {"fail": "True"}, store=store, max_parallel=2)
    assert statuses(bad2)["alert"] is S and statuses(bad2)["cleanup"] is S

    # and all is well again: everything from the first run is reused
    fine = run_notebook(notebook, store=store, max_parallel=2)
    assert statuses(fine) == statuses(again)


def test_a_metric_missing_at_run_time_fails_the_gated_step(
    store: Store, workspace_dir: Path
) -> None:
    notebook = write_notebook(workspace_dir / "dynamic.ipynb", [
        "%%mlstep evaluate\nfor name in ['acc']:\n    context.log(name, 0.9)",
        "%%mlstep deploy --if \"evaluate.accuracy > 0.5\"\nprint('deploying')",
        "%%mlstep after --after deploy\nprint('after')",
    ])
    result = run_notebook(notebook, store=store)
    assert result.status is RunStatus.FAILED
    assert statuses(result) == {"evaluate": S, "deploy": F, "after": K}
    [report] = result.failures
    assert report == ("step 'deploy' failed: its condition could not be evaluated: metric "
                      "'accuracy' of step 'evaluate' was not logged (its metrics: acc)")
    assert store.runs.step_run(result.run_id, "after").error == \
        "upstream step deploy did not succeed"


def test_docker_never_mounts_an_input_folder_that_is_not_there(tmp_path: Path) -> None:
    from mlpipe_jupyter.executors.base import StepTask
    from mlpipe_jupyter.executors.docker.containers import container_step

    there = tmp_path / "results" / "abc" / "model"
    there.mkdir(parents=True)
    task = StepTask(
        run_id="r", step="s", attempt=1, step_notebook=tmp_path / "run" / "step.ipynb",
        output_notebook=tmp_path / "run" / "out.ipynb", log_path=tmp_path / "run" / "log",
        cwd=tmp_path, input_paths={"a": there, "b": tmp_path / "results" / "gone" / "model"},
    )
    assert container_step(task, "image").read_only == (there,)
    assert not (tmp_path / "results" / "gone").exists()


def test_variables_from_a_failed_step_are_not_defined_and_the_cli_shows_conditions(
    store: Store, workspace_dir: Path
) -> None:
    from tests.conftest import run_cli

    notebook = write_notebook(workspace_dir / "use.ipynb", [
        "%%mlstep train --param ok=True\nmodel = {'w': 1}\nif not ok:\n    raise ValueError('no')\n"
        "context.log('score', 0.5)",
        "%%mlstep report --use train.model --output r --run-if all_done\n"
        "(outputs.r / 'r.txt').write_text(repr(model) if 'model' in globals() else 'no model')",
        "%%mlstep ship --if \"train.score > 0.9\" --run-if all_succeeded\nprint('ship')",
    ])
    checked = run_cli("check", str(notebook), cwd=workspace_dir)
    assert checked.returncode == 0, checked.stderr
    assert "run-if: all_done" in checked.stdout and "if: train.score > 0.9" in checked.stdout
    assert "2: ship (cell 3) after: train" not in checked.stdout  # ship is in layer 1
    assert "1: ship (cell 3) after: train" in checked.stdout

    good = run_notebook(notebook, store=store)
    assert statuses(good) == {"train": S, "report": S, "ship": K}
    assert (step_output(store, good.run_id, "report", "r") / "r.txt").read_text() == "{'w': 1}"
    bad = run_notebook(notebook, {"ok": "False"}, store=store)
    assert statuses(bad) == {"train": F, "report": S, "ship": K}
    assert (step_output(store, bad.run_id, "report", "r") / "r.txt").read_text() == "no model"

    why = run_cli("why", good.run_id, "ship", cwd=workspace_dir)
    assert why.returncode == 0, why.stderr
    assert "  condition train.score > 0.9 is false (train.score = 0.5)" in why.stdout
    shown = run_cli("show", good.run_id, cwd=workspace_dir)
    assert "condition train.score > 0.9 is false (train.score = 0.5)" in shown.stdout
    why = run_cli("why", bad.run_id, "ship", cwd=workspace_dir)
    assert "condition train.score > 0.9: not evaluated" in why.stdout
