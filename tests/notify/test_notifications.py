"""Notifications when a run ends, delivered to real receivers: a loopback HTTP server
(webhooks, checked signatures; apprise json://) and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlpipe_jupyter.model.notify import DEFAULT_ON, parse_on, parse_spec, redact
from mlpipe_jupyter.notifications import Delivery, run_link, sign
from mlpipe_jupyter.scheduling.publishing import publish
from mlpipe_jupyter.scheduling.scheduler import Scheduler
from mlpipe_jupyter.scheduling.schedules import create_schedule
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.notify import NotificationRecord
from tests.conftest import free_port, run_cli, write_notebook
from tests.notify.receivers import HttpReceiver, SmtpReceiver, verify_signature

OK_STEP = "%%mlstep make --output out --param n=1\n(outputs.out / 'n.txt').write_text(str(n))\n"
FAILING_STEP = ("%%mlstep boom --input d=make.out --output o\n"
                "raise ValueError('the data is bad')\n")
FAST = {"notify-attempts": "2", "notify-backoff": "0.1", "notify-timeout": "3"}


def _configure(settings: dict[str, str]) -> None:
    for key, value in settings.items():
        done = run_cli("config", "set", key, value)
        assert done.returncode == 0, done.stderr


def _notifications(store: Store, run_id: str, count: int,
                   timeout: float = 30) -> list[NotificationRecord]:
    deadline = time.time() + timeout
    while True:
        found = store.notify.of_run(run_id)
        if len(found) >= count or time.time() > deadline:
            return found
        time.sleep(0.1)


# -- the grammar (pure) ---------------------------------------------------------------------------
def test_spec_grammar_and_redaction() -> None:
    spec, problems = parse_spec("webhook:https://user:pw@hooks.example.com/services/T1/B2?token=x#secret=hook")
    assert spec is not None and not problems
    assert (spec.kind, spec.secret) == ("webhook", "hook")
    assert spec.target == "https://user:pw@hooks.example.com/services/T1/B2?token=x"
    assert spec.channel == ("webhook:https://***@hooks.example.com/services/***?token=*** "
                            "(signed with secret hook)")
    email, _ = parse_spec("email:ops@example.com, oncall@example.org")
    assert email is not None and email.addresses == ["ops@example.com", "oncall@example.org"]
    slack, _ = parse_spec("apprise:slack://TokenA/TokenB/TokenC")
    assert slack is not None and "Token" not in slack.channel
    assert redact("json://127.0.0.1:8000/hook") == "json://127.0.0.1:8000/hook"
    for bad in ("sms:123", "webhook:ftp://host/x", "webhook:https://h/x#key=1", "email:nobody",
                "apprise:no-scheme", "https://no-kind"):
        assert parse_spec(bad)[0] is None and parse_spec(bad)[1], bad
    assert parse_on(None) == (DEFAULT_ON, []) == (("failed", "canceled"), [])
    assert parse_on(["succeeded", "canceled,failed"])[0] == ("succeeded", "failed", "canceled")
    assert parse_on(["all"])[0] == ("succeeded", "failed", "canceled")
    assert parse_on(["sometimes"])[1]
    assert sign("k", "1700000000", b"{}") == (
        "sha256=" + __import__("hmac").new(b"k", b"1700000000.{}", "sha256").hexdigest())
    assert Delivery(timeout=5, attempts=3, backoff=1).waits() == [1, 2]
    assert Delivery(timeout=5, attempts=3, backoff=1).bound == 18
    assert run_link("http://lab:8888", "r1") == "http://lab:8888/lab?mlpipe-run=r1"


def test_bad_specs_are_usage_errors_before_anything_runs(workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "ok.ipynb", [OK_STEP])
    done = run_cli("run", str(notebook), "--notify", "sms:1", "--notify", "webhook:ftp://x",
                   "--notify", "apprise:nonsense://x", "--notify", "email:nobody",
                   "--notify", "webhook:http://127.0.0.1:9/x#secret=absent",
                   "--notify-on", "sometimes")
    assert done.returncode == 2, done.stderr
    assert "6 pipeline definition errors; nothing was run" in done.stderr
    for text in ("'sms:1': expected webhook:URL", "'webhook:ftp://***': a webhook is",
                 "apprise does not support this URL", "not an e-mail address: nobody",
                 "secret 'absent' not found; looked in: environment variable "
                 "MLPIPE_SECRET_ABSENT",
                 "--notify-on: 'sometimes'"):
        assert text in done.stderr
    assert not (workspace_dir / ".mlpipe").exists()
    # settings and defaults are checked the same way
    assert run_cli("config", "set", "smtp-tls", "maybe").returncode == 2
    assert "unknown setting 'colour'" in run_cli("config", "set", "colour", "red").stderr
    bad = run_cli("notify", "default", "add", "webhook:nope")
    assert bad.returncode == 2 and "a webhook is an http" in bad.stderr


def test_settings_and_workspace_defaults(workspace_dir: Path) -> None:
    _configure({"server-url": "http://lab.example:8888/", "smtp-port": "2525"})
    assert run_cli("config", "get", "smtp-port").stdout.strip() == "2525"
    listing = run_cli("config", "list").stdout
    assert "server-url" in listing and "http://lab.example:8888/" in listing
    assert "notify-timeout" in listing  # every setting, set or not
    added = run_cli("notify", "default", "add", "webhook:https://h.example/a/b/c?k=v",
                    "email:ops@example.com", "--on", "all")
    assert added.returncode == 0, added.stderr
    listing = run_cli("notify", "default", "list").stdout
    assert "webhook:https://h.example/a/***?k=***" in listing and "k=v" not in listing
    assert "succeeded,failed,canceled" in listing
    removed = run_cli("notify", "default", "remove", "email:ops@example.com")
    assert removed.returncode == 0 and "email:ops@example.com" in removed.stdout
    assert "email:" not in run_cli("notify", "list").stdout
    assert run_cli("notify", "default", "remove", "999").returncode == 1


@pytest.mark.slow
def test_failed_run_notifies_a_signed_webhook_and_an_email(
        workspace_dir: Path, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPIPE_SECRET_HOOK_KEY", "s3cret")
    _configure({"server-url": "http://lab.example:8888", "smtp-host": "127.0.0.1",
                "smtp-port": str(smtp_receiver.port), "smtp-tls": "none",
                "smtp-from": "mlpipe@example.com"})
    notebook = write_notebook(workspace_dir / "pipe.ipynb", [OK_STEP, FAILING_STEP])
    started = time.time()
    done = run_cli("run", str(notebook), "--json",
                   "--notify", f"webhook:{http_receiver.url()}#secret=hook-key",
                   "--notify", "email:ops@example.com,oncall@example.org")
    assert done.returncode == 1, done.stderr
    run_id = json.loads(done.stdout.splitlines()[-1])["run_id"]

    (hook,) = http_receiver.requests  # sent before the command exited
    verify_signature(hook, "s3cret")
    assert hook.headers["Content-Type"] == "application/json"
    payload = hook.json
    assert payload["run_id"] == run_id and payload["status"] == "failed"
    assert payload["notebook"] == str(notebook) and payload["published"] is None
    assert payload["failed_step"]["name"] == "boom"
    assert "ValueError: the data is bad" in payload["failed_step"]["error"]
    assert payload["url"] == f"http://lab.example:8888/lab?mlpipe-run={run_id}"
    assert 0 < payload["duration_seconds"] < time.time() - started

    ((recipients, mail),) = smtp_receiver.messages
    assert recipients == ["ops@example.com", "oncall@example.org"]
    assert mail["Subject"] == f"mlpipe run {run_id} failed: pipe.ipynb"
    assert mail["From"] == "mlpipe@example.com"
    text = mail.get_payload(decode=True).decode()
    assert "Failed step: boom" in text and "ValueError: the data is bad" in text

    show = run_cli("show", run_id).stdout
    assert "notifications:" in show
    assert f"webhook:{http_receiver.url()} (signed with secret hook-key)" in show
    assert "email:ops@example.com,oncall@example.org" in show
    assert show.count(" sent ") == 2


@pytest.mark.slow
def test_notify_on_a_down_endpoint_workspace_default_and_apprise(
        workspace_dir: Path, http_receiver: HttpReceiver) -> None:
    _configure(FAST)
    notebook = write_notebook(workspace_dir / "ok.ipynb", [OK_STEP])
    hook = f"webhook:{http_receiver.url()}"
    # a succeeded run does not notify by default (failed, canceled)
    first = run_cli("run", str(notebook), "--notify", hook)
    assert first.returncode == 0, first.stderr
    assert http_receiver.requests == []
    assert "notifications:" not in run_cli("show", "latest").stdout

    # --notify-on succeeded; an endpoint that is down leaves the run succeeded (the next
    # runs reuse the step: no kernel)
    closed = f"http://127.0.0.1:{free_port()}/hook"
    began = time.time()
    second = run_cli("run", str(notebook), "--notify", f"webhook:{closed}", "--notify", hook,
                     "--notify-on", "succeeded")
    assert second.returncode == 0, second.stderr
    assert time.time() - began < 20  # attempts x timeout + back-off, not more
    assert [r.json["status"] for r in http_receiver.requests] == ["succeeded"]
    show = run_cli("show", "latest").stdout
    assert "succeeded" in show.splitlines()[0]
    line = next(x for x in show.splitlines() if closed in x)
    assert "failed" in line and " 2 " in line and "Connection refused" in line
    assert "cannot reach the webhook" in second.stderr

    # the workspace default: an apprise json:// post to the receiver, on every status
    apprise_url = f"apprise:json://127.0.0.1:{http_receiver.port}/apprise"
    assert run_cli("notify", "default", "add", apprise_url, "--on", "all").returncode == 0
    third = run_cli("run", str(notebook), "--json")
    assert third.returncode == 0, third.stderr
    run_id = json.loads(third.stdout.splitlines()[-1])["run_id"]
    posted = http_receiver.requests[-1]
    assert posted.path == "/apprise"
    assert posted.json["title"] == f"mlpipe run {run_id} succeeded: ok.ipynb"
    assert f"Run {run_id} succeeded." in posted.json["message"]
    assert "apprise:json://127.0.0.1" in run_cli("show", run_id).stdout
    assert "workspace" in run_cli("show", run_id).stdout

    # removed: no more
    assert run_cli("notify", "default", "remove", apprise_url).returncode == 0
    count = len(http_receiver.requests)
    assert run_cli("run", str(notebook)).returncode == 0
    assert len(http_receiver.requests) == count


@pytest.mark.slow
def test_published_and_scheduled_runs_notify(
        store: Store, workspace_dir: Path, http_receiver: HttpReceiver) -> None:
    notebook = write_notebook(workspace_dir / "pipe.ipynb", [OK_STEP])
    publish(store, notebook, "nightly", notify=[f"webhook:{http_receiver.url('/published')}"],
            notify_on=["all"])
    shown = run_cli("published", "show", "nightly").stdout
    assert f"webhook:{http_receiver.url('/published')} on succeeded,failed,canceled" in shown

    triggered = run_cli("trigger", "nightly", "--wait", "--json")
    assert triggered.returncode == 0, triggered.stderr
    run_id = json.loads(triggered.stdout)["run_id"]
    (posted,) = http_receiver.wait(1)
    assert posted.path == "/published"
    assert (posted.json["run_id"], posted.json["published"]) == (run_id, "nightly@v1")
    assert posted.json["schedule"] is None

    # a schedule's own targets, and the published pipeline's, for a run it starts
    now = time.time()
    create_schedule(store, "nightly", name="hourly", every_seconds=3600, now=now,
                    notify=[f"webhook:{http_receiver.url('/schedule')}",
                            f"webhook:{http_receiver.url('/published')}"],
                    notify_on=["succeeded"])
    assert "/schedule on succeeded" in run_cli("schedule", "show", "hourly").stdout

    class Clock:
        def now(self) -> float:
            return now + 3600.5

    scheduler = Scheduler(store, clock=Clock())
    scheduler.tick()
    requests = http_receiver.wait(3, timeout=120)
    paths = sorted(r.path for r in requests[1:])
    assert paths == ["/published", "/schedule"]  # the spec named twice is sent once
    scheduled = requests[-1].json
    assert scheduled["schedule"] == "hourly" and scheduled["published"] == "nightly@v1"
    records = _notifications(store, scheduled["run_id"], 2)
    assert sorted(r.source for r in records) == ["schedule hourly", "schedule hourly"]
    scheduler.tick()  # settles the firing

    # deleting the schedule forgets its targets
    assert run_cli("schedule", "delete", "hourly").returncode == 0
    assert "schedule hourly" not in run_cli("notify", "list").stdout


@pytest.mark.slow
def test_a_canceled_run_notifies_after_its_status_is_recorded(
        workspace_dir: Path, http_receiver: HttpReceiver) -> None:
    notebook = write_notebook(workspace_dir / "slow.ipynb", [
        "%%mlstep wait --output o\nimport time\ntime.sleep(60)\n"])
    process = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_jupyter", "run", str(notebook), "-q",
         "--notify", f"webhook:{http_receiver.url()}"],  # default: failed, canceled
        cwd=workspace_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while True:
        assert time.time() < deadline, "the step did not start"
        if (workspace_dir / ".mlpipe" / "mlpipe.db").exists():
            store = Store.open()
            runs = store.runs.list_runs()
            if runs and any(s.status.value == "running" for s in store.runs.step_runs(runs[0].id)):
                break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 130
    (posted,) = http_receiver.requests
    assert posted.json["status"] == "canceled" and posted.json["failed_step"] is None
    assert posted.json["ended_at"] is not None  # the final status was recorded first
    assert [n.status for n in store.notify.of_run(runs[0].id)] == ["sent"]
