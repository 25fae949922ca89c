"""The REST API without running anything: listing, authentication, error statuses, paths."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.server.errors import http_status
from mlpipe_jupyter.server.handlers import ROUTES
from tests.conftest import write_notebook


async def test_notebooks_lists_only_pipelines(api: Any, project: Path) -> None:
    (project / ".hidden").mkdir()
    write_notebook(project / ".hidden" / "x.ipynb", ["%%mlstep x --output o\npass"])
    status, body = await api("GET", "notebooks")
    assert status == 200
    paths = [n["path"] for n in body["notebooks"]]
    assert paths == ["pipe.ipynb", "sub/slow.ipynb"]
    pipe = body["notebooks"][0]
    assert [s["name"] for s in pipe["steps"]] == ["make", "count"]
    assert pipe["steps"][1]["upstream"] == ["make"] and pipe["parameters"] == {"n": 3}
    assert pipe["error"] is None

    status, one = await api("GET", "notebooks", "pipe.ipynb")
    assert status == 200 and one == pipe
    status, plain = await api("GET", "notebooks", "plain.ipynb")  # described, with its problem
    assert status == 200 and plain["steps"] == [] and "no %%mlstep cells" in plain["error"]


async def test_no_workspace_yet(api: Any) -> None:
    status, body = await api("GET", "runs")
    assert status == 200 and body == {"runs": [], "limit": 20, "offset": 0}
    status, body = await api("GET", "runs", "latest")
    assert status == 404 and "no runs yet" in body["message"]


@pytest.mark.parametrize(("method", "parts", "params", "body", "code", "message"), [
    ("GET", ("runs",), {"status": "sleeping"}, None, 400, "unknown status 'sleeping'"),
    ("GET", ("runs",), {"limit": "many"}, None, 400, "'limit' must be an integer"),
    ("GET", ("runs",), {"limit": "0"}, None, 400, "limit must be between"),
    ("GET", ("runs",), {"offset": "-1"}, None, 400, "offset must not be negative"),
    ("GET", ("notebooks", "nothere.ipynb"), None, None, 404, "does not exist"),
    ("GET", ("notebooks", "pipe.txt"), None, None, 400, "is not a notebook"),
    ("POST", ("runs",), None, "{not json", 400, "not JSON"),
    ("POST", ("runs",), None, [1, 2], 400, "must be a JSON object"),
    ("POST", ("runs",), None, {}, 400, "'notebook'"),
    ("POST", ("runs",), None, {"notebook": "pipe.ipynb", "parameters": [1]}, 400, "'parameters'"),
    ("POST", ("runs",), None, {"notebook": "missing.ipynb"}, 404, "does not exist"),
    ("POST", ("runs",), None, {"notebook": "plain.ipynb"}, 400, "no %%mlstep cells"),
    ("POST", ("runs",), None, {"notebook": "pipe.ipynb", "parameters": {"nope": 1}}, 400,
     "unknown parameter"),
    ("POST", ("runs",), None, {"notebook": "pipe.ipynb", "parameters": {"n": "[1,"}}, 400,
     "parameter 'n'"),
    ("POST", ("runs",), None, {"notebook": "pipe.ipynb", "steps": ["ghost"]}, 400, "no step named"),
    ("POST", ("runs",), None, {"notebook": "pipe.ipynb", "compute": "mars"}, 400, "--compute mars"),
])
async def test_bad_input_is_a_4xx_with_a_message(
    api: Any, method: str, parts: tuple[str, ...], params: Any, body: Any, code: int,
    message: str,
) -> None:
    status, answer = await api(method, *parts, params=params, body=body)
    assert status == code, answer
    assert answer["status"] == code and message in answer["message"]


async def test_definition_errors_are_listed(api: Any, project: Path) -> None:
    write_notebook(project / "bad.ipynb", [
        "%%mlstep a --input x=b.out --output o\npass",
        "%%mlstep b --input y=a.o --output out --bogus\npass",
    ])
    status, body = await api("POST", "runs", body={"notebook": "bad.ipynb"})
    assert status == 400 and body["error"] == "DefinitionError"
    assert len(body["issues"]) >= 2
    assert not (project / ".mlpipe").exists()  # nothing was written


@pytest.mark.parametrize("path", ["../outside.ipynb", "sub/../../outside.ipynb",
                                  "/../outside.ipynb", "..%2Foutside.ipynb"])
async def test_paths_outside_the_root_are_refused(api: Any, project: Path, path: str) -> None:
    write_notebook(project.parent / "outside.ipynb", ["%%mlstep x --output o\npass"])
    status, body = await api("GET", "notebooks", path)
    assert status in (403, 404), body  # 404: the URL itself was normalised away
    status, body = await api("POST", "runs", body={"notebook": path.replace("%2F", "/")})
    assert status == 403 and "outside" in body["message"]
    status, body = await api("GET", "runs", params={"notebook": path.replace("%2F", "/")})
    assert status == 403


async def test_unknown_run_and_step(api: Any, project: Path) -> None:
    from mlpipe_jupyter.store import Store

    Store.open(project, create=True).close()  # an empty workspace
    (project / ".mlpipe" / "mlpipe.db").touch()
    for method, parts in [("GET", ("runs", "nope")), ("POST", ("runs", "nope", "cancel")),
                          ("GET", ("runs", "nope", "steps", "a")),
                          ("GET", ("runs", "nope", "steps", "a", "log")),
                          ("GET", ("runs", "nope", "steps", "a", "output")),
                          ("POST", ("runs", "nope", "steps", "a", "rerun"))]:
        status, body = await api(method, *parts)
        assert status == 404, (parts, body)
        assert "no run 'nope'" in body["message"] or "no runs yet" in body["message"]


async def test_every_route_requires_authentication(
    http_server_client: Any, jp_base_url: str, project: Path,
) -> None:
    for pattern, _ in ROUTES:
        path = (pattern.replace("(?P<run>[^/]+)", "latest").replace("(?P<step>[^/]+)", "make")
                .replace("(?P<path>.+)", "pipe.ipynb").replace("(?P<name>[^/]+)", "pipe")
                .replace("(?P<schedule>[^/]+)", "nightly").replace("\\", ""))
        for method in ("GET", "POST"):
            response = await http_server_client.fetch(
                f"{jp_base_url}mlpipe/api/{path}", method=method, raise_error=False,
                body="{}" if method == "POST" else None,
            )
            # 403: refused; 405: the route has no such method (and tells nothing)
            assert response.code in (403, 405), (method, path, response.code)
        assert response.code != 200


def test_error_table() -> None:
    from mlpipe_jupyter.errors import ConflictError, DefinitionError, NotFoundError, ParameterError

    assert http_status(DefinitionError([])) == 400
    assert http_status(ParameterError("x")) == 400
    assert http_status(NotFoundError("x")) == 404
    assert http_status(ConflictError("x")) == 409
    assert http_status(RuntimeError("x")) == 500


def test_openapi_document_matches_the_routes() -> None:
    from openapi_spec_validator import validate

    from mlpipe_jupyter.server.handlers import openapi_document

    spec = openapi_document()
    validate(spec)
    def documented_path(pattern: str) -> str:
        return "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern).replace("\\", "")

    routed = {documented_path(pattern) for pattern, _ in ROUTES}
    assert set(spec["paths"]) == routed
    for path, handler in ROUTES:
        documented = spec["paths"][documented_path(path)]
        implemented = {m.lower() for m in ("GET", "POST", "PUT", "DELETE") if m.lower() in vars(handler)}
        assert set(documented) == implemented, path


async def test_openapi_document_is_served(api: Any) -> None:
    from mlpipe_jupyter.server.handlers import openapi_document

    status, body = await api("GET", "openapi.json")
    assert status == 200 and body == openapi_document()


async def test_an_unreachable_compute_target_is_a_503_with_its_message(
    api: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlpipe_jupyter.store import Store

    monkeypatch.setenv("DOCKER_HOST", f"unix://{project}/no-such-docker.sock")
    status, body = await api("POST", "runs", body={"notebook": "pipe.ipynb", "compute": "docker"})
    assert status == 503, body
    assert body["error"] == "TargetUnavailableError"
    assert "no Docker engine answers" in body["message"]
    store = Store.open(project)
    assert store.runs.list_runs(None, None, None, 10, 0) == []  # no run was recorded
    store.close()
