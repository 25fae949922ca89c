"""Real receivers for the notification tests: an HTTP server on loopback that records
every POST (webhooks, apprise json://), and an SMTP server (aiosmtpd) that keeps every mail."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    port: int
    requests: list[Received] = field(default_factory=list)
    status: int = 200  # what it answers

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait(self, count: int = 1, timeout: float = 30) -> list[Received]:
        deadline = time.time() + timeout
        while len(self.requests) < count:
            assert time.time() < deadline, f"{len(self.requests)} requests, expected {count}"
            time.sleep(0.05)
        return list(self.requests)


def verify_signature(received: Received, key: str, max_age: float = 300) -> None:
    """What a receiver does (docs/notifications.md): HMAC-SHA256 of ``T.body`` with the
    shared key, compared in constant time, and a timestamp not older than ``max_age``."""
    timestamp = received.headers["X-Mlpipe-Timestamp"]
    expected = "sha256=" + hmac.new(key.encode(), timestamp.encode() + b"." + received.body,
                                    hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["X-Mlpipe-Signature"], expected)
    assert abs(time.time() - int(timestamp)) < max_age


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    receiver = HttpReceiver(server.server_address[1])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 -- http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


@dataclass
class SmtpReceiver:
    port: int
    messages: list[tuple[list[str], Message]] = field(default_factory=list)

    def wait(self, count: int = 1, timeout: float = 30) -> list[tuple[list[str], Message]]:
        deadline = time.time() + timeout
        while len(self.messages) < count:
            assert time.time() < deadline, f"{len(self.messages)} mails, expected {count}"
            time.sleep(0.05)
        return list(self.messages)


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    from aiosmtpd.controller import Controller

    from tests.conftest import free_port

    receiver = SmtpReceiver(free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            receiver.messages.append((list(envelope.rcpt_tos),
                                      message_from_bytes(envelope.content)))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=receiver.port)
    controller.start()
    yield receiver
    controller.stop()
