"""Fork-started local kernels (executors/kernel_template.py, fork_provisioner.py) keep
the isolation of fresh kernels: real pipeline runs on real kernels, each forked from the
kernel template that the tests' session fixture (``kernel_templates``) keeps private.

Each step gets its own process; nothing one step imports, sets or exports reaches the
next; secrets stay in their step; a step that kills its kernel or runs out of memory harms
no other; the template runs no user code. When the template cannot serve, kernels start
the usual way and the step log says so; installed packages changing restart it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.executors import fork_provisioner, kernel_template, template_client
from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.secrets import SecretStore
from tests.conftest import step_output, write_notebook
from tests.leftovers import alive, wait_for

pytestmark = pytest.mark.slow

SECRET = "s3cr3t-fork-value-8d1f"

# what a step writes about its process: pid, parent, and what it can see of earlier steps
# (requester: the process that asked for the kernel, from its connection file's folder,
# mlpipe-ipc-PID-...: a step process, or the runner for a step with secrets)
PROBE = (
    "import json, os, re, sys\n"
    "found = re.search(r'mlpipe-ipc-(\\d+)-', ' '.join(sys.argv))\n"
    "seen = {'pid': os.getpid(), 'ppid': os.getppid(),\n"
    "        'requester': int(found.group(1)) if found else None,\n"
    "        'marker_module': 'fork_marker' in sys.modules,\n"
    "        'variable': 'LEFT_BY_STEP' in globals(),\n"
    "        'sys_attribute': hasattr(sys, 'left_by_step'),\n"
    "        'env': os.environ.get('LEFT_BY_STEP'), 'tok': os.environ.get('TOK'),\n"
    "        'cwd': os.getcwd()}\n"
    "(outputs.o / 'seen.json').write_text(json.dumps(seen))\n"
)
# what a step leaves behind, which the next step must not see
LEAVE = (
    "import fork_marker\n"
    "LEFT_BY_STEP = 1\n"
    "sys.left_by_step = 1\n"
    "os.environ['LEFT_BY_STEP'] = '1'\n"
)


def _seen(store: Store, run_id: str, step: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (step_output(store, run_id, step, "o") / "seen.json").read_text())
    return data


def _marker_module(folder: Path) -> Path:
    """A module next to the notebook that records, on import, which process imported it."""
    marks = folder / "imported-by.txt"
    (folder / "fork_marker.py").write_text(
        "import os\n"
        f"with open({str(marks)!r}, 'a') as handle:\n"
        "    handle.write(f'{os.getpid()}\\n')\n")
    return marks


def _template() -> dict[str, Any]:
    return fork_provisioner.status()


def test_each_step_is_a_fresh_process_forked_from_a_template_that_runs_no_user_code(
        store: Store, workspace_dir: Path) -> None:
    marks = _marker_module(workspace_dir)
    notebook = write_notebook(workspace_dir / "chain.ipynb", [
        f"%%mlstep first --output o\n{PROBE}{LEAVE}",
        f"%%mlstep second --output o --after first\n{PROBE}{LEAVE}",
        f"%%mlstep third --output o --after second\n{PROBE}",
    ])
    result = run_notebook(notebook, store=store, max_parallel=1)
    assert result.ok, result.failures
    template = _template()
    seen = {step: _seen(store, result.run_id, step) for step in ("first", "second", "third")}
    pids = [s["pid"] for s in seen.values()]
    assert len(set(pids)) == 3 and template["pid"] not in pids  # a process of its own each
    assert all(s["ppid"] == template["pid"] for s in seen.values())  # ... forked, not started
    assert all(s["cwd"] == str(workspace_dir) for s in seen.values())
    for step in ("second", "third"):  # nothing the step before left is visible
        assert not seen[step]["marker_module"]
        assert not seen[step]["variable"]
        assert not seen[step]["sys_attribute"]
        assert seen[step]["env"] is None
    # the template never ran the steps' code: it never imported their module, holds none of
    # mlpipe's own, never saw their variables, and still runs one thread
    imported_by = {int(line) for line in marks.read_text().split()}
    assert imported_by == {seen["first"]["pid"], seen["second"]["pid"]}
    assert "fork_marker" not in template["modules"]
    assert not any(name.startswith("mlpipe_jupyter") for name in template["modules"])
    assert "LEFT_BY_STEP" not in template["environ"]
    assert template["threads"] == 1
    assert template["forks"] >= 3
    log = store.runs.log_path(result.run_id, "first").read_text()
    assert "without the kernel template" not in log
    # each step's papermill side ran in a step process of its own (not the runner), gone
    # after its step, forked from a step template that holds papermill but no user code
    requesters = [s["requester"] for s in seen.values()]
    assert None not in requesters and len(set(requesters)) == 3
    assert os.getpid() not in requesters
    assert not any(alive(pid) for pid in requesters)
    steps = template_client.status(kernel_template.STEP)
    assert steps["flavor"] == kernel_template.STEP and steps["threads"] == 1
    assert steps["forks"] >= 3 and "papermill" in steps["modules"]
    assert "fork_marker" not in steps["modules"]
    assert "LEFT_BY_STEP" not in steps["environ"]


def test_secrets_and_environment_variables_stay_in_their_step(
        store: Store, workspace_dir: Path) -> None:
    _marker_module(workspace_dir)
    SecretStore(store.workspace).set_value("tok", SECRET)
    notebook = write_notebook(workspace_dir / "secrets.ipynb", [
        f"%%mlstep holder --output o --secret tok\n{PROBE}{LEAVE}",
        f"%%mlstep other --output o --after holder\n{PROBE}",
    ])
    result = run_notebook(notebook, store=store, max_parallel=1)
    assert result.ok, result.failures
    holder, other = _seen(store, result.run_id, "holder"), _seen(store, result.run_id, "other")
    template = _template()
    assert holder["ppid"] == template["pid"]  # a step with secrets is forked too
    assert holder["requester"] == os.getpid()  # ... for the runner: no template sees secrets
    assert holder["tok"] == SECRET
    assert other["tok"] is None and other["env"] is None
    # the secret reached the kernel alone: never the template's environment or memory
    assert "TOK" not in template["environ"]
    environ = Path(f"/proc/{template['pid']}/environ")
    if environ.exists():
        assert SECRET.encode() not in environ.read_bytes()


def test_a_step_that_kills_its_kernel_or_runs_out_of_memory_harms_no_other(
        store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "faults.ipynb", [
        "%%mlstep crash --output o\nimport os\nos._exit(1)",
        "%%mlstep hog --output o\nimport resource\n"
        "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "limit = size + (256 << 20)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
        "blocks = [bytearray(64 << 20) for _ in range(64)]",
        f"%%mlstep survivor --output o\n{PROBE}",
    ])
    before = _template_pid_or_none()
    result = run_notebook(notebook, store=store, max_parallel=1)
    assert result.step_status == {"crash": StepStatus.FAILED, "hog": StepStatus.FAILED,
                                  "survivor": StepStatus.SUCCEEDED}
    assert "the kernel died" in (store.runs.step_run(result.run_id, "crash").error or "")
    hog = store.runs.step_run(result.run_id, "hog").error or ""
    assert "MemoryError" in hog or "the kernel died" in hog
    template = _template()
    assert _seen(store, result.run_id, "survivor")["ppid"] == template["pid"]
    if before is not None:
        assert template["pid"] == before  # the template lived through both
    assert not template["children"] or _seen(store, result.run_id, "survivor")["pid"] not in \
        template["children"]


def _template_pid_or_none() -> int | None:
    try:
        return int(_template()["pid"])
    except fork_provisioner.TemplateUnavailable:
        return None


def test_without_a_usable_template_kernels_start_the_usual_way_and_the_log_says_why(
        store: Store, workspace_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "rt-shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)  # others may enter: not a place for the template's socket
    monkeypatch.setenv("MLPIPE_RUNTIME_DIR", str(shared))
    notebook = write_notebook(workspace_dir / "plain.ipynb", [f"%%mlstep one --output o\n{PROBE}"])
    result = run_notebook(notebook, store=store)
    assert result.ok, result.failures
    log = store.runs.log_path(result.run_id, "one").read_text()
    assert "started without the kernel template (not forked)" in log
    assert "is not private to this user" in log
    assert _seen(store, result.run_id, "one")["ppid"] == os.getpid()  # a normal start
    assert not list(shared.glob("kt-*.sock"))


def test_a_template_that_refuses_or_died_is_replaced_or_bypassed(
        store: Store, workspace_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = write_notebook(workspace_dir / "one.ipynb", [f"%%mlstep one --output o\n{PROBE}"])
    first = run_notebook(notebook, store=store)
    assert first.ok, first.failures
    template = _template()["pid"]

    # another protocol version: refused, the kernel starts the usual way
    monkeypatch.setattr(template_client, "PROTOCOL", kernel_template.PROTOCOL + 1)
    refused = run_notebook(notebook, store=store, regenerate=True)
    assert refused.ok, refused.failures
    log = store.runs.log_path(refused.run_id, "one").read_text()
    assert "the kernel template refused: protocol" in log
    assert _seen(store, refused.run_id, "one")["ppid"] == os.getpid()
    monkeypatch.undo()

    # killed outright: its socket is left behind; the next kernel starts a new template
    os.kill(template, signal.SIGKILL)
    wait_for(lambda: not alive(template))
    again = run_notebook(notebook, store=store, regenerate=True)
    assert again.ok, again.failures
    replaced = _template()["pid"]
    assert replaced != template
    assert _seen(store, again.run_id, "one")["ppid"] == replaced
    assert "without the kernel template" not in store.runs.log_path(again.run_id, "one").read_text()


def test_installed_packages_changing_restart_the_template(
        store: Store, workspace_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    # a folder on both this process's path and the template's (PYTHONPATH): "installing" a
    # package there changes the environment fingerprint for both
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p))
    monkeypatch.setattr(template_client, "FINGERPRINT_TTL", 0.0)
    notebook = write_notebook(workspace_dir / "one.ipynb", [f"%%mlstep one --output o\n{PROBE}"])
    before = run_notebook(notebook, store=store)
    assert before.ok, before.failures
    old = _template()
    assert _seen(store, before.run_id, "one")["ppid"] == old["pid"]

    (site / "freshly_installed-1.0.dist-info").mkdir()
    after = run_notebook(notebook, store=store)
    assert after.ok, after.failures
    assert after.step_status == {"one": StepStatus.SUCCEEDED}  # a new environment: re-run
    new = _template()
    assert new["pid"] != old["pid"] and new["fingerprint"] != old["fingerprint"]
    assert _seen(store, after.run_id, "one")["ppid"] == new["pid"]
    wait_for(lambda: not alive(old["pid"]), timeout=3 * kernel_template.IDLE_CHECK_SECONDS)


def test_the_provisioner_plugs_into_jupyter_client(tmp_path: Path) -> None:
    """Through the kernel spec's provisioner metadata and jupyter_client's factory: a
    plain KernelManager gets a forked kernel."""
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3")
    assert fork_provisioner.use_fork_provisioner(manager)
    manager.start_kernel(cwd=str(tmp_path))
    try:
        provisioner = manager.provisioner
        assert isinstance(provisioner, fork_provisioner.ForkProvisioner)
        assert provisioner.fallback_reason is None
        assert isinstance(provisioner.process, fork_provisioner.ForkedProcess)
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive("import os; print(os.getppid())", timeout=30)
        assert reply["content"]["status"] == "ok"
        client.stop_channels()
        assert manager.is_alive()
    finally:
        manager.shutdown_kernel(now=True)
    assert provisioner.process is None or provisioner.process.poll() is not None


def _forked_kernel_report(cwd: Path) -> dict[str, Any]:
    """What a kernel forked through jupyter_client reports: its kernel_info's features, and
    whether debugpy was loaded at its start and can be imported by its code."""
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3")
    assert fork_provisioner.use_fork_provisioner(manager)
    manager.start_kernel(cwd=str(cwd))
    try:
        assert manager.provisioner.fallback_reason is None  # type: ignore[union-attr]
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        info = client.kernel_info(reply=True, timeout=30)["content"]
        found: list[str] = []
        reply = client.execute_interactive(
            "import sys\nloaded = 'debugpy' in sys.modules\nimport debugpy\n"
            "print(loaded, callable(debugpy.listen))", timeout=30,
            output_hook=lambda msg: found.append(msg["content"].get("text", "")))
        assert reply["content"]["status"] == "ok"
        client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)
    loaded, importable = "".join(found).split()
    return {"features": info.get("supported_features", []), "loaded": loaded == "True",
            "importable": importable == "True"}


def test_step_kernels_start_without_the_debugger_unless_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Papermill never attaches a debugger: a forked kernel starts without debugpy (its
    import is ~0.25 s of CPU per docker step), says so in kernel_info, and its code may
    still import debugpy. MLPIPE_KERNEL_DEBUGGER=1 gets a template that loads it."""
    plain = _forked_kernel_report(tmp_path)
    assert "debugger" not in plain["features"]
    assert not plain["loaded"] and plain["importable"]
    monkeypatch.setenv(kernel_template.DEBUGGER_VARIABLE, "1")
    with_debugger = _forked_kernel_report(tmp_path)
    assert "debugger" in with_debugger["features"]
    assert with_debugger["loaded"] and with_debugger["importable"]


def test_a_fan_out_starts_every_branch_together_once_its_input_is_ready(
        store: Store, workspace_dir: Path) -> None:
    """With --max-parallel 8, the eight branches after a shared step all start (each on a
    kernel of its own, forked) before any of them ends: no kernel start queues behind
    another."""
    branches = [f"b{i}" for i in range(8)]
    notebook = write_notebook(workspace_dir / "fan.ipynb", [
        "%%mlstep source --output o\n(outputs.o / 'n').write_text('1')",
        *[f"%%mlstep {name} --input i=source.o --output o\nimport os, time\ntime.sleep(5)\n"
          f"(outputs.o / 'pid').write_text(f'{{os.getpid()}} {name}')" for name in branches],
    ])
    result = run_notebook(notebook, store=store, max_parallel=8)
    assert result.ok, result.failures
    source = store.runs.step_run(result.run_id, "source")
    runs = [store.runs.step_run(result.run_id, name) for name in branches]
    first_end = min(run.ended_at or 0 for run in runs)
    assert all(source.ended_at <= (run.started_at or 0) < first_end for run in runs)
    pids = {(step_output(store, result.run_id, name, "o") / "pid").read_text().split()[0]
            for name in branches}
    assert len(pids) == 8
    assert all("without the kernel template" not in store.runs.log_path(result.run_id, name).read_text()
               for name in branches)


def test_files_of_templates_long_stopped_are_removed_and_no_other(tmp_path: Path) -> None:
    """Every install or source edit makes a new template key; the lock, log and dead socket
    files of old keys go once they are a day old, not those of a running template, of one
    being started (its lock held), of a recent one or of the key being started."""
    import fcntl
    import socket

    day_ago = time.time() - template_client.STALE_FILES_SECONDS - 60

    def files(stem: str, old: bool = True, sock: bool = False) -> None:
        for suffix in (".lock", ".log", *((".sock",) if sock else ())):
            path = tmp_path / f"{stem}{suffix}"
            if not path.exists():
                path.write_text("")
            if old:
                os.utime(path, (day_ago, day_ago))

    files("kt-dead0000000000000000", sock=True)  # killed: its socket stayed
    files("st-stopped000000000000")
    files("kt-recent0000000000000", old=False)
    files("kt-keep00000000000000")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "kt-running000000000000.sock"))
    listener.listen(1)
    files("kt-running000000000000", sock=True)
    files("st-starting00000000000")
    with listener, open(tmp_path / "st-starting00000000000.lock", "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        removed = template_client.remove_stale_files(tmp_path, keep="keep00000000000000")
    assert sorted(removed) == ["kt-dead0000000000000000.lock", "kt-dead0000000000000000.log",
                               "kt-dead0000000000000000.sock", "st-stopped000000000000.lock",
                               "st-stopped000000000000.log"]
    assert sorted({p.stem for p in tmp_path.iterdir()}) == [
        "kt-keep00000000000000", "kt-recent0000000000000", "kt-running000000000000",
        "st-starting00000000000"]
