"""A real ``jupyter lab`` for browser tests: started on a free loopback port with a token,
waited for, and stopped. Shared by the widget and panel browser tests."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
# this checkout's build (jlpm build in labextension/), whatever is installed
BUILT = REPO / "mlpipe_jupyter" / "labextension"


@dataclass(frozen=True)
class Lab:
    base: str  # http://127.0.0.1:PORT
    token: str


@contextmanager
def running_lab(root: Path, env: dict[str, str], extra_args: Sequence[str] = (),
                ready_path: str = "/api/status", stop_seconds: float = 30) -> Iterator[Lab]:
    """JupyterLab serving ``root``; ready when ``ready_path`` answers with the token."""
    port, token = free_port(), secrets.token_hex(16)
    log = root / "lab.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
         f"--port={port}", "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
         "--LabApp.news_url=None", f"--LabApp.workspaces_dir={root / 'lab-workspaces'}",
         # settings a test changes (the theme) stay in its folder, not in ~/.jupyter
         f"--LabApp.user_settings_dir={root / 'lab-user-settings'}",
         f"--ServerApp.root_dir={root}", *extra_args],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}{ready_path}?token={token}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError(log.read_text()) from None
                time.sleep(0.3)
        yield Lab(base, token)
    finally:
        server.terminate()
        try:
            server.wait(stop_seconds)
        except subprocess.TimeoutExpired:
            server.kill()


@contextmanager
def mlpipe_lab(root: Path) -> Iterator[str]:
    """JupyterLab serving ``root`` with this checkout's server extension and labextension
    (first on the search path, whatever is installed), the app exposed as
    ``window.jupyterapp`` for commands; yields the lab URL with its token."""
    assert (BUILT / "package.json").exists(), "build the extension: cd labextension && jlpm build"
    jupyter_path = root / "jupyter-data"
    (jupyter_path / "labextensions").mkdir(parents=True)
    (jupyter_path / "labextensions" / "mlpipe-jupyter").symlink_to(BUILT)
    config = root / "server-config.json"
    config.write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {"mlpipe_jupyter.server": True}}}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "JUPYTER_PATH": str(jupyter_path)}
    with running_lab(root, env, [f"--config={config}", "--LabApp.expose_app_in_browser=True"],
                     ready_path="/mlpipe/api/runs") as running:
        yield f"{running.base}/lab?token={running.token}"


def dismiss_news(page: object) -> None:
    """Close JupyterLab's "get notified about news?" toast if it shows (it covers the lower
    right corner of screenshots)."""
    no = page.locator(".jp-toast-button", has_text="No")  # type: ignore[attr-defined]
    if no.count():
        no.first.click()


def settle(page: object) -> None:
    """Wait until JupyterLab's start has stopped moving the keyboard focus: the app restored
    (``window.jupyterapp``, exposed by ``mlpipe_lab``) and, when it opens the Launcher in an
    empty main area, the Launcher activated. Until then a focus a test gives (a runs-list
    checkbox) can be taken away by the Launcher's activation, as it can from a user who
    starts typing before JupyterLab has finished opening."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_function(  # type: ignore[attr-defined]
        "() => window.jupyterapp !== undefined", timeout=90_000)
    page.evaluate("() => window.jupyterapp.restored.then(() => true)")  # type: ignore[attr-defined]
    try:
        page.wait_for_function(  # type: ignore[attr-defined]
            "() => !!(document.activeElement && document.activeElement.closest('.jp-Launcher'))",
            timeout=5_000)
    except PlaywrightTimeout:
        pass  # no Launcher opened (the main area was not empty): nothing moves the focus
