"""A real Jupyter server (pytest-jupyter) with the mlpipe extension, rooted at a project
folder whose workspace is ``root/.mlpipe`` (found from the server root, no MLPIPE_HOME)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests.conftest import write_notebook

STEPS = [
    "%%mlstep make --output data --param n=3\n"
    "(outputs.data / 'n.txt').write_text(str(n))\nprint('made', n)\n",
    "%%mlstep count --input d=make.data --output report\n"
    "n = int((inputs.d / 'n.txt').read_text())\ncontext.log('n', n)\n"
    "(outputs.report / 'r.txt').write_text(str(n * 2))\n",
]
SLOW_STEP = "%%mlstep wait --output out\nimport time\nprint('waiting', flush=True)\ntime.sleep(120)\n"


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"mlpipe_jupyter.server": True}}}


@pytest.fixture
def project(jp_root_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server root with pipe.ipynb (make -> count) and slow.ipynb (one long step)."""
    monkeypatch.delenv("MLPIPE_HOME", raising=False)
    monkeypatch.chdir(jp_root_dir)
    write_notebook(jp_root_dir / "pipe.ipynb", STEPS)
    write_notebook(jp_root_dir / "sub" / "slow.ipynb", [SLOW_STEP])
    write_notebook(jp_root_dir / "plain.ipynb", ["print('no steps here')"])
    return jp_root_dir


@pytest.fixture
def api(jp_fetch: Any, project: Path) -> Any:
    """``await api(method, *path, body=..., params=...)`` -> (status, JSON or text)."""

    async def call(method: str, *parts: str, body: Any = None, params: Any = None,
                   raw: bool = False) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"method": method}
        if params:
            kwargs["params"] = params
        if method in ("POST", "PUT"):
            kwargs["body"] = body if isinstance(body, str) else json.dumps(body or {})
        try:
            response = await jp_fetch("mlpipe", "api", *parts, **kwargs)
        except HTTPClientError as error:
            assert error.response is not None
            return error.code, json.loads(error.response.body)
        text = response.body.decode()
        return response.code, text if raw else json.loads(text)

    return call


async def wait_for_run(api: Any, run_id: str, statuses: tuple[str, ...] = (
        "succeeded", "failed", "canceled"), timeout: float = 120) -> dict[str, Any]:
    """The run's detail once its status is one of ``statuses`` (the test polls; the panel
    does not)."""
    import asyncio

    deadline = time.time() + timeout
    while True:
        status, run = await api("GET", "runs", run_id)
        assert status == 200, run
        if run["status"] in statuses:
            return dict(run)
        assert time.time() < deadline, f"run {run_id} still {run['status']}"
        await asyncio.sleep(0.3)
