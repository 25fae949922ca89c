"""The receivers (tests/notify/receivers.py) and the REST fixtures (tests/server) as
fixtures of these tests."""

from tests.notify.receivers import http_receiver, smtp_receiver  # noqa: F401
from tests.server.conftest import api, jp_server_config, project  # noqa: F401
