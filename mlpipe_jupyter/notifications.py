"""Sending the notifications of a run that ended: webhooks, e-mail, apprise.

The runner calls ``notify_run`` once the run's final status is recorded. Which targets
apply (``targets_for``): the run's own ``--notify`` specs, the workspace default, the
published pipeline's (a run of ``NAME@vN``) and the schedule's (a run a schedule started),
each with the statuses that notify; a spec named twice is sent once. Each delivery is
tried up to ``notify-attempts`` times with ``notify-timeout`` seconds per attempt and a
doubling back-off, deliveries run at once (one thread each), and each is recorded in the
store — sent, or failed with the error. Nothing here raises into the runner: a failed
notification never changes a run's status.

Webhook signature (receivers verify it; docs/notifications.md): with the secret named
by ``#secret=NAME``, the headers ``X-Mlpipe-Timestamp: T`` (Unix seconds) and
``X-Mlpipe-Signature: sha256=HEX`` where HEX is the hex HMAC-SHA256, keyed by the
secret's UTF-8 bytes, of ``T`` + ``.`` + the raw request body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from mlpipe_jupyter.errors import MlpipeError
from mlpipe_jupyter.model.notify import (
    APPRISE,
    EMAIL,
    NOT_SENT,
    SENT,
    WEBHOOK,
    NotifySpec,
    parse_spec,
)
from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.notify import PUBLISHED, SCHEDULE, WORKSPACE
from mlpipe_jupyter.store.secrets import SecretStore

log = logging.getLogger(__name__)

SERVER_URL_VARIABLE = "MLPIPE_SERVER_URL"
SIGNATURE_HEADER = "X-Mlpipe-Signature"
TIMESTAMP_HEADER = "X-Mlpipe-Timestamp"
EVENT = "run.finished"
USER_AGENT = "mlpipe-jupyter-notify/1"

DEFAULT_TIMEOUT = 5.0  # x 3 attempts + 1 s + 2 s < the scheduler's 20 s SIGTERM-to-SIGKILL grace
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF = 1.0


# -- which targets apply ---------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A spec to notify, the statuses that notify, and where it comes from."""

    spec: NotifySpec
    on: tuple[str, ...]
    source: str  # "run", "workspace", "published NAME", "schedule NAME"


def targets_for(store: Store, run_specs: Sequence[str] = (), run_on: Sequence[str] = (),
                published: str | None = None, schedule: str | None = None) -> list[Target]:
    """Every target of a run; a spec named in several places is one target notifying on
    the union of their statuses (its source is the first: run, schedule, published,
    workspace). Stored specs that no longer parse are skipped with a warning."""
    found: list[tuple[str, Sequence[str], str]] = [(s, run_on, "run") for s in run_specs]
    if schedule:
        found += [(t.spec, t.on, t.source) for t in store.notify.targets(SCHEDULE, schedule)]
    if published:
        name = published.split("@", 1)[0]
        found += [(t.spec, t.on, t.source) for t in store.notify.targets(PUBLISHED, name)]
    found += [(t.spec, t.on, t.source) for t in store.notify.targets(WORKSPACE, "")]
    merged: dict[str, Target] = {}
    for raw, on, source in found:
        spec, problems = parse_spec(raw)
        if spec is None:
            log.warning("notification target of %s skipped: %s", source, "; ".join(problems))
            continue
        if spec.raw in merged:
            known = merged[spec.raw]
            union = tuple(s for s in ("succeeded", "failed", "canceled") if s in (*known.on, *on))
            merged[spec.raw] = Target(spec, union, known.source)
        else:
            merged[spec.raw] = Target(spec, tuple(on), source)
    return list(merged.values())


# -- what a notification says ------------------------------------------------------------------
def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


def server_url(store: Store) -> str | None:
    """The Jupyter server's URL for links: ``MLPIPE_SERVER_URL``, else the workspace's
    ``server-url`` setting, else None (no link)."""
    url = os.environ.get(SERVER_URL_VARIABLE) or store.settings.get("server-url")
    return url.rstrip("/") if url else None


def run_link(base: str | None, run_id: str) -> str | None:
    """The run in JupyterLab: the panel opens the run named by ``?mlpipe-run=ID``."""
    return None if base is None else f"{base}/lab?mlpipe-run={quote(run_id)}"


def run_payload(store: Store, run_id: str) -> dict[str, Any]:
    """The webhook's JSON body (and what e-mails and apprise messages say)."""
    run = store.runs.get_run(run_id)
    steps = store.runs.step_runs(run_id)
    failed = [s for s in steps if s.status is StepStatus.FAILED]
    return {
        "event": EVENT,
        "run_id": run.id,
        "status": run.status.value,
        "notebook": run.notebook,
        "experiment": run.experiment,
        "published": run.published,
        "schedule": run.options.get("schedule"),
        "failed_step": ({"name": failed[0].step, "error": failed[0].error} if failed else None),
        "failed_steps": [{"name": s.step, "error": s.error} for s in failed],
        "error": run.error,
        "started_at": _iso(run.created_at),
        "ended_at": _iso(run.ended_at),
        "duration_seconds": None if run.duration is None else round(run.duration, 3),
        "host": run.host,
        "url": run_link(server_url(store), run.id),
    }


def _title(payload: Mapping[str, Any]) -> str:
    what = payload["published"] or os.path.basename(str(payload["notebook"]))
    return f"mlpipe run {payload['run_id']} {payload['status']}: {what}"


def _text(payload: Mapping[str, Any]) -> str:
    lines = [
        f"Run {payload['run_id']} {payload['status']}.",
        f"Notebook: {payload['notebook']}",
    ]
    if payload["published"]:
        lines.append(f"Published pipeline: {payload['published']}")
    if payload["schedule"]:
        lines.append(f"Schedule: {payload['schedule']}")
    if payload["duration_seconds"] is not None:
        lines.append(f"Duration: {payload['duration_seconds']:.1f} s")
    failed = payload["failed_step"]
    if failed:
        lines.append(f"Failed step: {failed['name']}")
        if failed["error"]:
            lines += ["", str(failed["error"])]
    elif payload["error"] and payload["status"] != "succeeded":
        lines += ["", str(payload["error"])]
    if payload["url"]:
        lines += ["", f"In JupyterLab: {payload['url']}"]
    lines += ["", f"mlpipe show {payload['run_id']}"]
    return "\n".join(lines)


# -- delivery settings ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    timeout: float = DEFAULT_TIMEOUT
    attempts: int = DEFAULT_ATTEMPTS
    backoff: float = DEFAULT_BACKOFF  # before the 2nd attempt; doubled for each next one

    @classmethod
    def of(cls, settings: Mapping[str, str]) -> Delivery:
        return cls(float(settings.get("notify-timeout", DEFAULT_TIMEOUT)),
                   int(float(settings.get("notify-attempts", DEFAULT_ATTEMPTS))),
                   float(settings.get("notify-backoff", DEFAULT_BACKOFF)))

    def waits(self) -> list[float]:
        """The pauses between attempts: backoff, 2 x backoff, 4 x backoff ..."""
        return [self.backoff * 2 ** i for i in range(self.attempts - 1)]

    @property
    def bound(self) -> float:
        """The longest all the attempts of one delivery can take."""
        return self.timeout * self.attempts + sum(self.waits())


class DeliveryError(Exception):
    """One attempt failed; ``retry`` False when trying again cannot help (a missing
    secret, a rejected address, an HTTP 4xx other than 408/429)."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


# -- channels ------------------------------------------------------------------------------------
def sign(key: str, timestamp: str, body: bytes) -> str:
    """The ``X-Mlpipe-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _secret(store: Store, name: str) -> str:
    try:
        return SecretStore(store.workspace).resolve(name)
    except MlpipeError as exc:
        raise DeliveryError(str(exc), retry=False) from None


def send_webhook(store: Store, spec: NotifySpec, payload: Mapping[str, Any],
                 timeout: float) -> None:
    import urllib.error
    import urllib.request

    body = json.dumps(payload, default=str).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Mlpipe-Event": EVENT, "X-Mlpipe-Delivery": uuid.uuid4().hex,
               TIMESTAMP_HEADER: timestamp}
    if spec.secret:
        headers[SIGNATURE_HEADER] = sign(_secret(store, spec.secret), timestamp, body)
    request = urllib.request.Request(spec.target, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}",
                            retry=exc.code >= 500 or exc.code in (408, 429)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"cannot reach the webhook: {reason}") from None


def send_email(store: Store, spec: NotifySpec, payload: Mapping[str, Any],
               timeout: float) -> None:
    import smtplib
    import ssl
    from email.message import EmailMessage

    settings = store.settings.all()
    tls = settings.get("smtp-tls", "starttls")
    host = settings.get("smtp-host", "localhost")
    port = int(float(settings.get("smtp-port") or {"ssl": 465, "starttls": 587}.get(tls, 25)))
    message = EmailMessage()
    message["Subject"] = _title(payload)
    message["From"] = settings.get("smtp-from") or f"mlpipe@{socket.getfqdn()}"
    message["To"] = ", ".join(spec.addresses)
    message["X-Mlpipe-Run"] = str(payload["run_id"])
    message.set_content(_text(payload))
    password = None
    if settings.get("smtp-password-secret"):
        password = _secret(store, settings["smtp-password-secret"])
    try:
        smtp: smtplib.SMTP
        if tls == "ssl":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            if tls == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if settings.get("smtp-user"):
                smtp.login(settings["smtp-user"], password or "")
            refused = smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(f"recipients refused: {', '.join(exc.recipients)}", retry=False) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"SMTP login refused: {exc.smtp_code}", retry=False) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"SMTP server {host}:{port}: {exc} (smtp-tls {tls})",
                            retry=False) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP server {host}:{port}: {exc}") from None
    if refused:
        raise DeliveryError(f"recipients refused: {', '.join(refused)}", retry=False)


def apprise_problem(url: str) -> str | None:
    """Why apprise cannot use ``url`` (None: it can)."""
    try:
        import apprise
    except ImportError:
        return "apprise is not installed (pip install apprise)"
    if apprise.Apprise.instantiate(url) is None:
        return "apprise does not support this URL (see https://github.com/caronc/apprise/wiki)"
    return None


def apprise_channel(spec: NotifySpec) -> str:
    """An apprise target as shown: apprise's own privacy form of the URL."""
    try:
        import apprise

        plugin = apprise.Apprise.instantiate(spec.target)
        if plugin is not None:
            return f"apprise:{plugin.url(privacy=True)}"
    except Exception:  # noqa: BLE001 -- only a display: fall back to ours
        pass
    return spec.channel


def send_apprise(store: Store, spec: NotifySpec, payload: Mapping[str, Any],
                 timeout: float) -> None:
    import apprise

    notifier = apprise.Apprise()
    plugin = apprise.Apprise.instantiate(spec.target)
    if plugin is None:
        raise DeliveryError("apprise does not support this URL", retry=False)
    # apprise's own connect/read timeouts (cto/rto), where the service has them
    for name in ("socket_connect_timeout", "socket_read_timeout"):
        if hasattr(plugin, name):
            setattr(plugin, name, timeout)
    notifier.add(plugin)
    failed = payload["status"] != "succeeded"
    with apprise.LogCapture(level=logging.WARNING) as captured:
        ok = notifier.notify(body=_text(payload), title=_title(payload),
                             notify_type=apprise.NotifyType.FAILURE if failed
                             else apprise.NotifyType.SUCCESS)
    if not ok:
        lines = [line.split(" - ", 2)[-1] for line in captured.getvalue().splitlines() if line]
        raise DeliveryError("; ".join(lines[-2:]) or "apprise could not deliver")


SENDERS: dict[str, Callable[[Store, NotifySpec, Mapping[str, Any], float], None]] = {
    WEBHOOK: send_webhook, EMAIL: send_email, APPRISE: send_apprise,
}


# -- sending -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    channel: str
    source: str
    status: str  # SENT or NOT_SENT
    attempts: int
    error: str | None


def deliver(store: Store, target: Target, payload: Mapping[str, Any],
            delivery: Delivery, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """One target, with retries; never raises."""
    channel = apprise_channel(target.spec) if target.spec.kind == APPRISE else target.spec.channel
    waits = delivery.waits()
    error = None
    for attempt in range(1, delivery.attempts + 1):
        try:
            SENDERS[target.spec.kind](store, target.spec, payload, delivery.timeout)
            return Outcome(channel, target.source, SENT, attempt, None)
        except DeliveryError as exc:
            error = str(exc)
            if not exc.retry:
                return Outcome(channel, target.source, NOT_SENT, attempt, error)
        except Exception as exc:  # noqa: BLE001 -- a library's surprise is a failed delivery
            error = f"{type(exc).__name__}: {exc}"
        if attempt <= len(waits):
            sleep(waits[attempt - 1])
    return Outcome(channel, target.source, NOT_SENT, delivery.attempts, error)


def notify_run(store: Store, run_id: str, targets: Iterable[Target]) -> list[Outcome]:
    """Send the notifications of run ``run_id`` (its final status recorded) to the targets
    whose statuses include it, at once, and record each. Never raises; returns within
    about ``Delivery.bound`` seconds."""
    try:
        run = store.runs.get_run(run_id)
        status = run.status.value
        due = [t for t in targets if status in t.on]
        if not due:
            return []
        payload = run_payload(store, run_id)
        delivery = Delivery.of(store.settings.all())
    except Exception:  # noqa: BLE001 -- notifications never break a run
        log.exception("notifications of run %s: could not prepare them", run_id)
        return []
    outcomes: list[Outcome | None] = [None] * len(due)

    def one(index: int) -> None:
        outcomes[index] = deliver(store, due[index], payload, delivery)

    threads = [threading.Thread(target=one, args=(i,), daemon=True,
                                name=f"mlpipe-notify-{i}") for i in range(len(due))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + delivery.bound + 5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    done: list[Outcome] = []
    for target, outcome in zip(due, outcomes, strict=True):
        if outcome is None:  # a sender that ignored its timeout
            outcome = Outcome(target.spec.channel, target.source, NOT_SENT, delivery.attempts,
                              f"no answer within {delivery.bound:.0f} s")
        done.append(outcome)
        try:
            store.notify.record(run_id, outcome.channel, outcome.source, status, outcome.status,
                                outcome.attempts, outcome.error)
        except Exception:  # noqa: BLE001
            log.exception("notification of run %s: could not record it", run_id)
        if outcome.status != SENT:
            log.warning("notification of run %s to %s failed after %d attempt(s): %s", run_id,
                        outcome.channel, outcome.attempts, outcome.error)
    return done


__all__ = [
    "SERVER_URL_VARIABLE", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "Delivery", "Outcome",
    "Target", "apprise_problem", "deliver", "notify_run", "run_link", "run_payload",
    "server_url", "sign", "targets_for",
]
