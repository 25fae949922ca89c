"""Local steps run in step processes (executors/step_process.py): forks of the per-user
step template, one per step, each driving a kernel of its own. Real runs, real kernels,
real templates (kept private by the session fixture ``kernel_templates``).

What a user relies on still holds: every step has its own step process and kernel, which
are gone after it; the template never runs user code; a step process that dies fails its
step alone and leaves no kernel behind; when the step template cannot serve, steps run in
the runner as before. And the point of it: the runner imports neither papermill nor
jupyter_client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_jupyter.executors import step_process, template_client
from mlpipe_jupyter.executors.kernel_template import STEP
from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.runner.runner import RunResult, run_notebook
from mlpipe_jupyter.store import Store
from tests.conftest import run_cli, step_output, write_notebook
from tests.leftovers import alive, kernels_of, wait_for

pytestmark = pytest.mark.slow

# What a step writes about who runs it: its kernel's pid, and the process that started the
# kernel (the step process), from the kernel's connection file folder: mlpipe-ipc-PID-...
PROBE = (
    "import json, os, re, sys\n"
    "found = re.search(r'mlpipe-ipc-(\\d+)-', ' '.join(sys.argv))\n"
    "seen = {'pid': os.getpid(), 'requester': int(found.group(1)) if found else None}\n"
    "(outputs.o / 'seen.json').write_text(json.dumps(seen))\n"
)


def _seen(store: Store, run_id: str, step: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (step_output(store, run_id, step, "o") / "seen.json").read_text())
    return data


def test_the_runner_imports_neither_papermill_nor_jupyter_client(workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "two.ipynb", [
        "%%mlstep one --output o\n(outputs.o / 'v').write_text('1')",
        "%%mlstep two --input i=one.o --output o\n(outputs.o / 'v').write_text('2')",
    ])
    probe = ("import sys\nfrom mlpipe_jupyter.cli.main import main\n"
             f"code = main(['run', '-q', {str(notebook)!r}])\n"
             "print(sorted(m for m in ('papermill', 'jupyter_client', 'nbclient', 'zmq')"
             " if m in sys.modules))\n"
             "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=workspace_dir, text=True,
                          capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_command_forks_the_first_step_process_while_it_plans(workspace_dir: Path) -> None:
    """``mlpipe run`` asks for the first step's process as it starts (``head_start``): the
    step runs in that very fork (one fork for a one-step run). A re-run that reuses the
    step forks at most one, before it knows (none if the command has ended before the
    fork was asked for), and ends it with the command."""
    notebook = write_notebook(workspace_dir / "one.ipynb", [f"%%mlstep only --output o\n{PROBE}"])
    template_client.ensure_template(STEP)
    forks = template_client.status(STEP)["forks"]
    done = run_cli("run", "-q", "--json", str(notebook), cwd=workspace_dir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == {"only": "succeeded"}
    assert template_client.status(STEP)["forks"] == forks + 1
    again = run_cli("run", "-q", "--json", str(notebook), cwd=workspace_dir)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["steps"] == {"only": "reused"}
    status = template_client.status(STEP)
    assert status["forks"] in (forks + 1, forks + 2)
    assert status["children"] == []  # ended with the command, not left to the template
    # likewise with the default target named
    named = run_cli("run", "-q", "--compute", "local", str(notebook), "--regenerate",
                    cwd=workspace_dir)
    assert named.returncode == 0, named.stderr
    assert template_client.status(STEP)["forks"] == status["forks"] + 1


def test_a_wrong_guess_of_the_notebook_costs_only_the_head_start(workspace_dir: Path) -> None:
    """The entry point guesses the notebook before the argument parser (``cli.entry``). An
    option's value that names another notebook file is taken for it: that fork goes unused
    (the step runs in a fork for its own folder) and is ended with the command."""
    notebook = write_notebook(workspace_dir / "one.ipynb", [f"%%mlstep only --output o\n{PROBE}"])
    elsewhere = workspace_dir / "elsewhere"
    elsewhere.mkdir()
    decoy = write_notebook(elsewhere / "decoy.ipynb", ["x = 1"])
    template_client.ensure_template(STEP)
    forks = template_client.status(STEP)["forks"]
    done = run_cli("run", "-q", "--json", "--experiment", str(decoy), str(notebook),
                   cwd=workspace_dir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == {"only": "succeeded"}
    status = template_client.status(STEP)
    assert status["forks"] == forks + 2  # the decoy's head start, and the step's own
    wait_for(lambda: template_client.status(STEP)["children"] == [], timeout=30)


def _step_template_running() -> bool:
    try:
        template_client.status(STEP)
    except (template_client.TemplateUnavailable, OSError):
        return False
    return True


def test_a_reused_run_does_not_wait_for_a_stopped_step_template(workspace_dir: Path) -> None:
    """With the step template stopped (idle for 15 minutes), a run whose steps are all
    reused does not wait for the template's start (~1 s; timed by hand: 0.46-0.48 s, as
    with a warm template): its head start only starts the template, for the next run, and
    leaves no fork behind."""
    notebook = write_notebook(workspace_dir / "one.ipynb", ["%%mlstep only --output o\nx = 1"])
    assert run_cli("run", "-q", str(notebook), cwd=workspace_dir).returncode == 0
    template_client.stop_template(STEP)
    wait_for(lambda: not _step_template_running(), timeout=60)
    again = run_cli("run", "-q", "--json", str(notebook), cwd=workspace_dir)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["steps"] == {"only": "reused"}
    wait_for(_step_template_running, timeout=120)  # started by the head start, warm now
    wait_for(lambda: template_client.status(STEP)["children"] == [], timeout=30)


def test_a_step_process_killed_mid_step_fails_its_step_alone_and_leaves_no_kernel(
        store: Store, workspace_dir: Path) -> None:
    started = workspace_dir / "victim-requester"
    notebook = write_notebook(workspace_dir / "kill.ipynb", [
        "%%mlstep victim --output o\nimport os, re, sys, time, pathlib\n"
        "found = re.search(r'mlpipe-ipc-(\\d+)-', ' '.join(sys.argv))\n"
        f"pathlib.Path({str(started)!r}).write_text(found.group(1))\n"
        "time.sleep(120)",
        "%%mlstep bystander --output o\nimport time\ntime.sleep(3)\n"
        "(outputs.o / 'v').write_text('ok')",
    ])
    results: list[RunResult] = []
    runner = threading.Thread(target=lambda: results.append(
        run_notebook(notebook, store=store, max_parallel=2)))
    runner.start()
    wait_for(lambda: started.exists() and started.read_text().strip(), timeout=120)
    victim = int(started.read_text())
    kernels = kernels_of(victim)
    assert kernels  # the kernel the step process started, forked from the kernel template
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout=120)
    assert results, "the run did not end"
    result = results[0]
    assert result.step_status == {"victim": StepStatus.FAILED,
                                  "bystander": StepStatus.SUCCEEDED}
    error = store.runs.step_run(result.run_id, "victim").error or ""
    assert "the step's process ended before the step did (killed by SIGKILL)" in error
    # the kernel template killed the kernel whose requester went away
    wait_for(lambda: not any(alive(kernel.pid) for kernel in kernels), timeout=30)
    assert not list((workspace_dir / ".mlpipe" / "staging").glob("*"))


def test_without_a_step_template_steps_run_in_the_runner(
        store: Store, workspace_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*_: Any, **__: Any) -> Any:
        raise template_client.TemplateUnavailable("no step template in this test")

    monkeypatch.setattr(step_process.StepProcess, "start", unavailable)
    notebook = write_notebook(workspace_dir / "one.ipynb", [f"%%mlstep one --output o\n{PROBE}"])
    result = run_notebook(notebook, store=store)
    assert result.ok, result.failures
    assert _seen(store, result.run_id, "one")["requester"] == os.getpid()
    log = store.runs.log_path(result.run_id, "one").read_text()
    assert "without the kernel template" not in log  # its kernel is still forked


def test_an_edited_package_gets_a_new_step_template(monkeypatch: pytest.MonkeyPatch) -> None:
    """An editable install's edit must reach the next steps: the step template imported
    the package, so another source makes another template."""
    monkeypatch.setattr(template_client, "FINGERPRINT_TTL", 0.0)
    source = Path(step_process.__file__)
    before = template_client.TemplateAddress(sys.executable, STEP).key
    info = source.stat()
    try:
        os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
        assert template_client.TemplateAddress(sys.executable, STEP).key != before
    finally:
        os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert template_client.TemplateAddress(sys.executable, STEP).key == before


_folder_names = st.text(alphabet="abcXYZ 019_-.,+=@ éüß€漢😀", min_size=1, max_size=14).filter(
    lambda name: name.strip(" .") != "" and not name.startswith("-"))


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(folder=_folder_names)
def test_a_project_folder_of_any_name_with_local_files_and_modules(
        store: Store, workspace_dir: Path, folder: str) -> None:
    """The step process works in the notebook's folder, whatever its name: relative paths
    and modules next to the notebook resolve as they do in Jupyter."""
    project = workspace_dir / folder
    project.mkdir(exist_ok=True)
    (project / "helper_mod.py").write_text("def twice(x):\n    return 2 * x\n", encoding="utf-8")
    (project / "data.txt").write_text("21", encoding="utf-8")
    notebook = write_notebook(project / "nb ünï.ipynb", [
        "%%mlstep use --output o\nimport helper_mod\n"
        "value = helper_mod.twice(int(open('data.txt').read()))\n"
        "(outputs.o / 'v').write_text(str(value))",
    ])
    result = run_notebook(notebook, store=store)
    assert result.ok, result.failures
    assert (step_output(store, result.run_id, "use", "o") / "v").read_text() == "42"


def test_a_step_canceled_in_its_step_process_reports_canceled_and_leaves_no_kernel(
        tmp_path: Path) -> None:
    """A cancel reaches the step process as SIGTERM; it kills the kernel and reports the
    step canceled (not a dead kernel, which a retry would run again)."""
    import queue

    from mlpipe_jupyter.executors.base import StepOutcome, StepTask
    from mlpipe_jupyter.executors.local import LocalExecutor

    marker = tmp_path / "requester"
    notebook = write_notebook(tmp_path / "nap.ipynb", [
        "import pathlib, re, sys, time\n"
        "found = re.search(r'mlpipe-ipc-(\\d+)-', ' '.join(sys.argv))\n"
        f"pathlib.Path({str(marker)!r}).write_text(found.group(1))\n"
        "time.sleep(120)"])
    task = StepTask(run_id="r-cancel", step="nap", attempt=1, step_notebook=notebook,
                    output_notebook=tmp_path / "out.ipynb", log_path=tmp_path / "log.txt",
                    cwd=tmp_path)
    executor = LocalExecutor()
    outcomes: queue.Queue[StepOutcome] = queue.Queue()
    try:
        executor.prepare(tmp_path, 1, 1)
        executor.submit(task, outcomes.put)
        wait_for(lambda: marker.exists() and marker.read_text().strip(), timeout=120)
        requester = int(marker.read_text())
        kernels = kernels_of(requester)
        assert kernels and requester != os.getpid()
        executor.cancel("r-cancel", "nap")
        outcome = outcomes.get(timeout=60)
    finally:
        executor.close()
    assert not outcome.ok and outcome.canceled and outcome.error == "canceled"
    wait_for(lambda: not any(alive(kernel.pid) for kernel in kernels), timeout=30)
    assert not alive(requester)
    assert (tmp_path / "out.ipynb").exists()  # the executed notebook, as far as it got


def test_step_cells_stay_out_of_the_users_ipython_history(
        workspace_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As with nbclient's kernels, a step's history is in memory: ``In`` works in the step,
    and the user's IPython history database never gets the step's code (parallel kernels
    committing to it meet "database is locked")."""
    ipython_dir = tmp_path / "ipython"
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
    marker = "step_marker_5eb1"
    notebook = write_notebook(workspace_dir / "history.ipynb", [
        f"%%mlstep one --output o\n{marker} = 1\n"
        f"assert any({marker!r} in cell for cell in In), In\n"
        "(outputs.o / 'v').write_text('1')",
        f"%%mlstep two --output o\n{marker} = 2\n(outputs.o / 'v').write_text('2')",
    ])
    result = run_notebook(notebook)
    assert result.ok, result.failures
    for database in ipython_dir.rglob("*.sqlite"):
        assert marker.encode() not in database.read_bytes(), database

