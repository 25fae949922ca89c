"""The notification spec grammar (pure): where to say that a run ended, and when.

A spec is ``KIND:TARGET``:

- ``webhook:https://host/path[#secret=NAME]`` — a signed JSON POST (``http://`` too); the
  HMAC key is the secret NAME of the secret store (no ``#secret``: unsigned);
- ``email:ADDRESS[,ADDRESS...]`` — a mail through the workspace's SMTP settings;
- ``apprise:URL`` — any apprise URL (``slack://...``, ``msteams://...``, ``json://...``),
  handed to apprise as it is.

``--notify-on`` names the run statuses that notify: ``succeeded``, ``failed``,
``canceled`` (comma-separated, repeatable), or ``all``; the default is failed and canceled.

Parsing never raises for a user's mistake: the ``*_issues`` functions return messages, so
validation can report every problem at once. Secrets never appear in a spec: a webhook's
key is named (``#secret=NAME``), an SMTP password is a setting naming a secret, and
``redact`` strips credentials from URLs before anything is stored or shown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

WEBHOOK = "webhook"
EMAIL = "email"
APPRISE = "apprise"
KINDS = (WEBHOOK, EMAIL, APPRISE)

SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELED = "canceled"
STATUSES = (SUCCEEDED, FAILED, CANCELED)
DEFAULT_ON = (FAILED, CANCELED)

# Delivery records: what happened to one notification of one run.
SENT = "sent"
NOT_SENT = "failed"

_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class NotifySpec:
    """One parsed spec. ``raw`` is what the user wrote (stored as it is)."""

    raw: str
    kind: str
    target: str  # the URL (without the #secret fragment) or the comma-separated addresses
    secret: str | None = None  # webhook: the secret store's name of the HMAC key

    @property
    def addresses(self) -> list[str]:
        return [a.strip() for a in self.target.split(",") if a.strip()]

    @property
    def channel(self) -> str:
        """How the channel is shown and recorded: credentials stripped."""
        if self.kind == EMAIL:
            return f"email:{self.target}"
        shown = redact(self.target)
        if self.secret:
            shown += f" (signed with secret {self.secret})"
        return f"{self.kind}:{shown}"


# apprise schemes that are plain HTTP posts: their host is a host, not a token
_HTTP_LIKE = ("http", "https", "json", "jsons", "xml", "xmls", "form", "forms")


def redact(url: str) -> str:
    """``url`` without what may be a credential: user and password, query values, the path
    after its first segment (``https://hooks.slack.com/services/***``), and for apprise
    services that are not plain HTTP (``slack://TOKEN_A/TOKEN_B/...``) all but the scheme."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if not parts.scheme:
        return "<no scheme>"
    if parts.scheme not in _HTTP_LIKE:
        return f"{parts.scheme}://***"
    host = parts.hostname or ""
    if port:
        host += f":{port}"
    if parts.username or parts.password:
        host = f"***@{host}"
    segments = parts.path.split("/")
    path = "/".join(segments[:2]) + ("/***" if len([s for s in segments[2:] if s]) else "")
    query = "&".join(f"{item.split('=', 1)[0]}=***" for item in parts.query.split("&") if item)
    return urlunsplit((parts.scheme, host, path, query, ""))


def _webhook(raw: str, rest: str) -> tuple[NotifySpec | None, list[str]]:
    url, _, fragment = rest.partition("#")
    secret = None
    problems: list[str] = []
    if fragment:
        key, _, value = fragment.partition("=")
        if key != "secret" or not _SECRET_NAME.match(value):
            problems.append(f"{_shown(raw)!r}: the fragment must be #secret=NAME "
                            "(letters, digits, '_', '-', '.')")
        secret = value or None
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        ok = False
    if not ok:
        shown = f"webhook:{redact(url)}"
        problems.append(f"{shown!r}: a webhook is an http:// or https:// URL with a host")
    return (None if problems else NotifySpec(raw, WEBHOOK, url, secret)), problems


def parse_spec(raw: str) -> tuple[NotifySpec | None, list[str]]:
    """One spec, or the problems with it (never both)."""
    text = raw.strip()
    kind, colon, rest = text.partition(":")
    if not colon or kind not in KINDS:
        return None, [f"{_shown(text)!r}: expected webhook:URL, email:ADDRESS or apprise:URL"]
    if kind == WEBHOOK:
        return _webhook(text, rest)
    if kind == EMAIL:
        addresses = [a.strip() for a in rest.split(",")]
        bad = [a for a in addresses if not _EMAIL.match(a)]
        if bad or not rest.strip():
            return None, [f"{text!r}: not an e-mail address: {', '.join(bad) or '(none)'}"]
        return NotifySpec(text, EMAIL, ",".join(addresses)), []
    try:
        scheme = urlsplit(rest).scheme
    except ValueError:
        scheme = ""
    if not scheme or "://" not in rest:
        return None, [f"{_shown(text)!r}: an apprise spec is apprise:SCHEME://... "
                      "(slack://, msteams://, json://, ...)"]
    return NotifySpec(text, APPRISE, rest), []


def _shown(text: str) -> str:
    """A spec in a message: a URL-looking one redacted."""
    kind, _, rest = text.partition(":")
    return f"{kind}:{redact(rest)}" if "://" in rest else text


def parse_specs(raws: Iterable[str]) -> tuple[list[NotifySpec], list[str]]:
    specs: list[NotifySpec] = []
    problems: list[str] = []
    for raw in raws:
        spec, found = parse_spec(raw)
        problems += found
        if spec is not None:
            specs.append(spec)
    return specs, problems


def parse_on(items: Sequence[str] | None) -> tuple[tuple[str, ...], list[str]]:
    """``--notify-on`` values (comma-separated, repeatable; ``all``) -> statuses, problems.
    None or empty: the default, failed and canceled."""
    if not items:
        return DEFAULT_ON, []
    chosen: list[str] = []
    problems: list[str] = []
    for item in items:
        for word in (w.strip().lower() for w in item.split(",")):
            if word == "all":
                chosen += STATUSES
            elif word in STATUSES:
                chosen.append(word)
            else:
                problems.append(f"{word!r}: expected {', '.join(STATUSES)} or all")
    return tuple(s for s in STATUSES if s in chosen), problems


# -- workspace settings -----------------------------------------------------------------------
Check = Callable[[str], str | None]  # a setting's value -> a problem, or None


def _number(minimum: float) -> Check:
    def check(value: str) -> str | None:
        try:
            ok = float(value) >= minimum
        except ValueError:
            ok = False
        return None if ok else f"must be a number >= {minimum:g}"
    return check


def _url(value: str) -> str | None:
    parts = urlsplit(value)
    return None if parts.scheme in ("http", "https") and parts.hostname else \
        "must be an http:// or https:// URL"


def _choice(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"
    return check


def _any(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _secret_name(value: str) -> str | None:
    return None if _SECRET_NAME.match(value) else "must be a secret name (letters, digits, _-.)"


# key -> (what it is, its check)
SETTINGS: dict[str, tuple[str, Check]] = {
    "server-url": ("the Jupyter server's URL, for links to a run in JupyterLab "
                   "(env MLPIPE_SERVER_URL wins)", _url),
    "smtp-host": ("SMTP server host (default localhost)", _any),
    "smtp-port": ("SMTP port (default 587 with starttls, 465 with ssl, else 25)", _number(1)),
    "smtp-from": ("From address (default mlpipe@HOSTNAME)", _any),
    "smtp-tls": ("starttls (default), ssl or none", _choice("starttls", "ssl", "none")),
    "smtp-user": ("SMTP login user (none: no login)", _any),
    "smtp-password-secret": ("the secret store's name of the SMTP password", _secret_name),
    "notify-timeout": ("seconds one delivery attempt may take (default 5)", _number(0.1)),
    "notify-attempts": ("delivery attempts per notification (default 3)", _number(1)),
    "notify-backoff": ("seconds before the 2nd attempt, doubled each next (default 1)",
                       _number(0)),
}


def setting_issues(key: str, value: str | None) -> list[str]:
    """Problems with ``mlpipe config set KEY VALUE`` (value None: only the key)."""
    if key not in SETTINGS:
        return [f"unknown setting {key!r} (settings: {', '.join(SETTINGS)})"]
    if value is None:
        return []
    problem = SETTINGS[key][1](value)
    return [f"{key} {value!r}: {problem}"] if problem else []


__all__ = [
    "APPRISE", "CANCELED", "DEFAULT_ON", "EMAIL", "FAILED", "KINDS", "NOT_SENT", "SENT",
    "SETTINGS", "STATUSES", "SUCCEEDED", "WEBHOOK", "NotifySpec", "parse_on", "parse_spec",
    "parse_specs", "redact", "setting_issues",
]
