"""Publishing, triggering and schedules through the ``mlpipe`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlpipe_jupyter.scheduling.publishing import get_published, list_published, publish
from mlpipe_jupyter.store import Store
from tests.conftest import run_cli, write_notebook

STEP = "%%mlstep make --output out --param n=1\nimport helper\n(outputs.out / 'n.txt').write_text(helper.twice(n))"


def _project(workspace_dir: Path, body: str = "def twice(n):\n    return str(2 * n)\n") -> Path:
    (workspace_dir / "helper.py").write_text(body)
    return write_notebook(workspace_dir / "make.ipynb", [STEP, "print('not a step')"])


def test_publish_versions_and_snapshot(store: Store, workspace_dir: Path) -> None:
    notebook = _project(workspace_dir)
    first, created = publish(store, notebook, "make")
    assert created and first.ref == "make@v1" and first.files == ["helper.py"]
    assert (first.notebook.parent / "helper.py").exists()
    assert first.parameters == {"n": 1} and first.is_default
    # a non-step cell changing is not a new version; the step or an imported module is
    write_notebook(notebook, [STEP, "print('still not a step')"])
    assert publish(store, notebook, "make") == (get_published(store, "make", 1), False)
    (workspace_dir / "helper.py").write_text("def twice(n):\n    return str(n + n)\n")
    second, created = publish(store, notebook, "make")
    assert created and second.version == 2 and second.is_default
    assert "2 * n" in (first.notebook.parent / "helper.py").read_text()  # v1 is untouched
    third, _ = publish(store, write_notebook(notebook, [STEP + "\n# v3"]), "make", make_default=False)
    assert [v.is_default for v in list_published(store, "make")] == [False, True, False]
    assert third.version == 3


def test_publish_cli_and_errors(workspace_dir: Path) -> None:
    notebook = _project(workspace_dir)
    done = run_cli("publish", str(notebook), "--name", "make")
    assert done.returncode == 0 and "published make@v1" in done.stdout
    again = run_cli("publish", str(notebook), "--name", "make")
    assert "unchanged: make@v1" in again.stdout
    bad = run_cli("publish", str(notebook), "--name", "no good")
    assert bad.returncode == 2 and "published pipeline name 'no good' is not valid" in bad.stderr
    broken = write_notebook(workspace_dir / "broken.ipynb", ["%%mlstep a --input x=dataset:nope --output o"])
    done = run_cli("publish", str(broken), "--name", "broken")
    assert done.returncode == 2 and "dataset 'nope' is not registered" in done.stderr
    listing = run_cli("published", "list").stdout
    assert "make" in listing and "broken" not in listing
    shown = json.loads(run_cli("published", "show", "make", "--json").stdout)
    assert shown["ref"] == "make@v1" and shown["default"] is True
    assert run_cli("published", "disable", "make").stdout.strip() == "make@v1 disabled"
    done = run_cli("trigger", "make")
    assert done.returncode == 1 and "disabled" in done.stderr
    run_cli("published", "enable", "make", "--version", "1")
    for args, message in [
        (("trigger", "nope"), "no published pipeline named 'nope'"),
        (("trigger", "make", "--version", "9"), "has no version 9 (versions: v1)"),
        (("trigger", "make", "-p", "m=1"), "unknown parameter(s) m for make@v1"),
        (("trigger", "make", "-p", "n=lots"), "parameter 'n' expects int"),
    ]:
        done = run_cli(*args)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_schedule_cli(workspace_dir: Path) -> None:
    notebook = _project(workspace_dir)
    run_cli("publish", str(notebook), "--name", "make")
    for args, message in [
        (("--cron", "61 * * * *"), "cron '61 * * * *': minute 61 is out of range 0-59"),
        (("--cron", "0 6 * * *", "--timezone", "Mars/Base"), "--timezone 'Mars/Base': unknown"),
        (("--every", "soon"), "--every 'soon': expected a duration"),
        (("--every", "1h", "-p", "x=1"), "unknown parameter(s) x"),
        (("--on-dataset", "nums"), "--on-dataset nums: make@v1 reads no such dataset"),
    ]:
        done = run_cli("schedule", "create", "make", *args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    done = run_cli("schedule", "create", "nope", "--every", "1h")
    assert done.returncode == 2 and "no published pipeline named 'nope'" in done.stderr
    assert "no schedules" in run_cli("schedule", "list").stdout
    done = run_cli("schedule", "create", "make", "--cron", "0 6 * * *", "--timezone",
                   "Europe/Paris", "-p", "n=3", "--retries", "2", "--timeout", "1h",
                   "--missed", "run_once", "--overlap", "queue")
    assert done.returncode == 0 and "created schedule make-cron" in done.stdout
    assert "next: " in done.stdout
    assert run_cli("schedule", "create", "make", "--every", "15m").returncode == 0
    listing = run_cli("schedule", "list").stdout
    assert "make-cron" in listing and "make-every" in listing and "every 15m" in listing
    shown = run_cli("schedule", "show", "make-cron").stdout
    assert "missed run_once, overlap queue, retries 2" in shown and "timeout 1h" in shown
    data = json.loads(run_cli("schedule", "show", "make-cron", "--json").stdout)
    assert len(data["next_fire_times"]) == 3 and data["params"] == {"n": "3"}
    assert "paused" in run_cli("schedule", "pause", "make-cron").stdout
    assert "paused" in run_cli("schedule", "list").stdout
    assert "resumed" in run_cli("schedule", "resume", "make-cron").stdout
    assert "deleted" in run_cli("schedule", "delete", "make-every").stdout
    done = run_cli("schedule", "create", "make", "--every", "1h", "--name", "make-cron")
    assert done.returncode == 1 and "exists already" in done.stderr


@pytest.mark.slow
def test_trigger_runs_the_snapshot_not_the_live_notebook(store: Store, workspace_dir: Path) -> None:
    notebook = _project(workspace_dir)
    publish(store, notebook, "make")
    (workspace_dir / "helper.py").write_text("def twice(n):\n    return 'edited'\n")
    done = run_cli("trigger", "make", "-p", "n=21", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["published"] == "make@v1"
    run = store.runs.get_run(result["run_id"])
    [step] = store.runs.step_runs(run.id)
    assert (store.results.path(step.result_id or "", "out") / "n.txt").read_text() == "42"
    assert run.experiment == "make" and run.params == {"n": 21}
    # without --wait: the id comes back at once, the run lands in the same history
    started = run_cli("trigger", "make")
    run_id = started.stdout.strip()
    from mlpipe_jupyter.scheduling.triggering import wait_for_run

    assert wait_for_run(store, run_id, timeout=120).published == "make@v1"
