"""The REST API under ``{base_url}mlpipe/api/``: parse the request, call the service, answer.

Every route requires Jupyter's authentication (token or login cookie; XSRF on POST from a
browser session). Errors are mapped to statuses in one place (``mlpipe_jupyter.errors.OUTCOMES``):
``send_error`` below swaps tornado's 500 for the table's status, so handlers never catch.
Live updates are streamed as server-sent events over an authenticated GET: the server
watches the store; the browser never polls.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from typing import Any

from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from mlpipe_jupyter.errors import MlpipeError, ParameterError
from mlpipe_jupyter.model.sweep import SweepSpec, SweepSyntaxError, parse_sweep
from mlpipe_jupyter.runner.planning import Selection
from mlpipe_jupyter.server.errors import BadRequestError, error_body, http_status
from mlpipe_jupyter.server.scheduling import ScheduleRequest
from mlpipe_jupyter.server.service import PipelineService

API_PREFIX = "mlpipe/api"
WATCH_SECONDS = 0.5  # how often the server (not the browser) looks for store changes
KEEPALIVE_SECONDS = 15.0


class MlpipeHandler(APIHandler):
    """Base of every route: JSON in and out, library errors mapped to HTTP statuses."""

    @property
    def service(self) -> PipelineService:
        return self.settings["mlpipe_service"]  # type: ignore[no-any-return]

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], MlpipeError):
            status_code = http_status(exc_info[1])
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        error = exc_info[1] if exc_info else None
        if isinstance(error, MlpipeError):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(error_body(error)))
            return
        if isinstance(error, web.HTTPError):  # tornado's own: bad JSON body, auth, 404 route
            message = error.log_message % error.args if error.log_message else self._reason
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": status_code, "error": self._reason,
                                    "message": message}))
            return
        self.set_header("Content-Type", "application/json")  # a bug: traceback only in the log
        self.finish(json.dumps({"status": status_code, "error": "InternalError",
                                "message": "internal error; see the server log"}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, MlpipeError) and http_status(value) < 500:
            self.log.info("mlpipe %s %s: %s", self.request.method, self.request.path, value)
            return
        if isinstance(value, MlpipeError) and http_status(value) != 500:
            # 503: the compute target cannot run steps now; the message says why, no bug
            self.log.warning("mlpipe %s %s: %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)

    # -- request parsing ------------------------------------------------------------------
    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError as exc:
            raise BadRequestError(f"the request body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequestError("the request body must be a JSON object")
        return body

    def int_argument(self, name: str, default: int | None) -> int | None:
        text = self.get_query_argument(name, None)
        if text is None or text == "":
            return default
        try:
            return int(text)
        except ValueError:
            raise BadRequestError(f"query argument {name!r} must be an integer, got {text!r}") from None

    def bool_argument(self, name: str, default: bool = False) -> bool:
        text = self.get_query_argument(name, None)
        if text is None or text == "":
            return default
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise BadRequestError(f"query argument {name!r} must be true or false, got {text!r}")

    def reply(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is not default and not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        names = " or ".join(k.__name__ for k in kinds)
        raise BadRequestError(f"field {name!r} must be {names}")
    return value


_SWEEP_KEYS = ("sweep", "samples", "seed", "yes")


def _sweep_field(body: dict[str, Any]) -> tuple[SweepSpec | None, bool]:
    """The optional ``"sweep": {"sweep": ["C=0.1,1", ...], "samples": N, "seed": S,
    "yes": bool}`` of a request, read as ``mlpipe run --sweep`` reads its options (a
    malformed sweep is a ParameterError: 400 with the CLI's messages)."""
    data = _field(body, "sweep", dict, None)
    if data is None:
        return None, False
    unknown = sorted(set(data) - set(_SWEEP_KEYS))
    if unknown:
        raise BadRequestError(f"field 'sweep' has unknown keys {', '.join(unknown)} "
                              f"(it takes {', '.join(_SWEEP_KEYS)})")
    items = data.get("sweep", [])
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise BadRequestError("field 'sweep.sweep' must be a list of strings such as "
                              "\"C=0.1,1,10\"")
    numbers: dict[str, int | None] = {}
    for key in ("samples", "seed"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequestError(f"field 'sweep.{key}' must be an integer")
        numbers[key] = value
    yes = data.get("yes", False)
    if not isinstance(yes, bool):
        raise BadRequestError("field 'sweep.yes' must be a boolean")
    try:
        return parse_sweep(items, numbers["samples"], numbers["seed"]), yes
    except SweepSyntaxError as exc:
        raise ParameterError.of(exc.issues) from None


class NotebooksHandler(MlpipeHandler):
    @web.authenticated
    def get(self) -> None:
        self.reply({"notebooks": self.service.list_notebooks()})


class NotebookHandler(MlpipeHandler):
    @web.authenticated
    def get(self, path: str) -> None:
        self.reply(self.service.notebook(path))


class RunsHandler(MlpipeHandler):
    @web.authenticated
    def get(self) -> None:
        self.reply(self.service.list_runs(
            notebook=self.get_query_argument("notebook", None) or None,
            experiment=self.get_query_argument("experiment", None) or None,
            status=self.get_query_argument("status", None) or None,
            limit=self.int_argument("limit", 20) or 0,
            offset=self.int_argument("offset", 0) or 0,
        ))

    @web.authenticated
    async def post(self) -> None:
        body = self.json_body()
        notebook = _field(body, "notebook", str, None)
        if not notebook:
            raise BadRequestError("field 'notebook' (a path relative to the server root) is required")
        parameters = _field(body, "parameters", dict, {})
        steps = _field(body, "steps", list, [])
        if not all(isinstance(s, str) for s in steps):
            raise BadRequestError("field 'steps' must be a list of step names")
        selection = Selection(
            steps=tuple(steps),
            downstream=bool(_field(body, "downstream", bool, False)),
            until=_field(body, "until", str, None),
            regenerate=bool(_field(body, "regenerate", bool, False)),
        )
        notify = _field(body, "notify", list, [])
        notify_on = _field(body, "notify_on", list, [])
        if not all(isinstance(s, str) for s in (*notify, *notify_on)):
            raise BadRequestError("fields 'notify' and 'notify_on' must be lists of strings")
        sweep, yes = _sweep_field(body)
        loop = asyncio.get_running_loop()
        started = await loop.run_in_executor(None, lambda: self.service.start_run(
            notebook, parameters, _field(body, "compute", str, None), selection,
            _field(body, "experiment", str, None), notify=notify, notify_on=notify_on,
            sweep=sweep, yes=yes,
        ))
        self.reply(started, status=202)


class RunHandler(MlpipeHandler):
    @web.authenticated
    def get(self, run: str) -> None:
        self.reply(self.service.run(run))


class CancelHandler(MlpipeHandler):
    @web.authenticated
    def post(self, run: str) -> None:
        self.reply(self.service.cancel(run), status=202)


class StepHandler(MlpipeHandler):
    @web.authenticated
    def get(self, run: str, step: str) -> None:
        self.reply(self.service.step(run, step))


class RerunHandler(MlpipeHandler):
    @web.authenticated
    async def post(self, run: str, step: str) -> None:
        loop = asyncio.get_running_loop()
        started = await loop.run_in_executor(None, self.service.rerun_step, run, step)
        self.reply(started, status=202)


class LogHandler(MlpipeHandler):
    @web.authenticated
    def get(self, run: str, step: str) -> None:
        chunk = self.service.read_log(run, step, offset=self.int_argument("offset", None),
                                      tail=self.int_argument("tail", None))
        self.reply({"run_id": chunk.run_id, "text": chunk.text, "offset": chunk.offset,
                    "final": chunk.final})


class OutputHandler(MlpipeHandler):
    @web.authenticated
    def get(self, run: str, step: str) -> None:
        allow_hidden = bool(getattr(self.contents_manager, "allow_hidden", False))
        link = self.service.output_notebook(run, step, allow_hidden)
        base = self.base_url
        link["lab_url"] = (url_path_join(base, "lab", "tree", link["path"])
                           if link["openable"] else None)
        link["html_url"] = url_path_join(base, API_PREFIX, "runs", run, "steps", step,
                                         "output.html")
        self.reply(link)


class OutputHtmlHandler(MlpipeHandler):
    """The executed notebook rendered as HTML: viewable even where the contents API
    cannot open it (the workspace is a hidden folder)."""

    @property
    def content_security_policy(self) -> str:
        """The page's own inline styles and embedded (data:) images, nothing else: no
        scripts, no requests (APIHandler's "default-src 'none'" would leave it unstyled)."""
        return "; ".join([JupyterHandler.content_security_policy.fget(self),  # type: ignore[attr-defined]
                          "default-src 'none'", "style-src 'unsafe-inline'",
                          "img-src data:", "font-src data:"])

    @web.authenticated
    async def get(self, run: str, step: str) -> None:
        theme = self.get_argument("theme", "light")  # the run view asks for JupyterLab's
        if theme not in ("light", "dark"):
            raise BadRequestError(f"theme must be light or dark, not {theme!r}")
        path = self.service.output_notebook_file(run, step)
        loop = asyncio.get_running_loop()
        html = await loop.run_in_executor(None, _render_html, str(path), theme)
        # APIHandler.finish sets the content type (JSON unless told): a browser (the run
        # view's frame) then shows the page's source instead of the page
        self.finish(html, set_content_type="text/html; charset=utf-8")


def _render_html(path: str, theme: str = "light") -> str:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", theme=theme)
    body, _ = exporter.from_notebook_node(nbformat.read(path, 4))
    return str(body)


class SweepsHandler(MlpipeHandler):
    @web.authenticated
    def get(self) -> None:
        self.reply(self.service.list_sweeps(
            notebook=self.get_query_argument("notebook", None) or None,
            limit=self.int_argument("limit", 20) or 0,
        ))


class SweepHandler(MlpipeHandler):
    @web.authenticated
    def get(self, sweep: str) -> None:
        self.reply(self.service.sweep(sweep, self.get_query_argument("sort", None) or None,
                                      self.bool_argument("ascending")))


class SweepChartHandler(MlpipeHandler):
    @web.authenticated
    def get(self, sweep: str) -> None:
        self.reply(self.service.sweep_chart(
            sweep, self.get_query_argument("metric", None) or None,
            self.get_query_argument("parameter", None) or None))


def _run_list(handler: MlpipeHandler) -> list[str]:
    """``?runs=A,B,C`` (or the argument repeated): the runs to compare, in order."""
    refs = [ref.strip() for text in handler.get_query_arguments("runs")
            for ref in text.split(",") if ref.strip()]
    if not refs:
        raise BadRequestError("query argument 'runs' is required: two or more run ids, "
                              "separated by commas")
    return refs


class CompareHandler(MlpipeHandler):
    @web.authenticated
    def get(self) -> None:
        self.reply(self.service.compare(_run_list(self)))


class CompareChartHandler(MlpipeHandler):
    @web.authenticated
    def get(self) -> None:
        self.reply(self.service.compare_chart(
            _run_list(self), self.get_query_argument("metric", None) or None,
            self.get_query_argument("parameter", None) or None))


class PublishedListHandler(MlpipeHandler):
    @web.authenticated
    def get(self) -> None:
        self.reply(self.service.scheduling.list_published())

    @web.authenticated
    async def post(self) -> None:
        """Publish a notebook: 201 with the new version, 200 when its content equals the
        latest version (nothing created)."""
        body = self.json_body()
        _known_fields(body, ("notebook", "name", "description", "keep_default", "notify",
                             "notify_on"), "a publication")
        notebook = _field(body, "notebook", str, None)
        name = _field(body, "name", str, None)
        if not notebook or not name:
            raise BadRequestError("fields 'notebook' (a path relative to the server root) and "
                                  "'name' are required")
        path = self.service.notebook_file(notebook)
        notify = _strings(body, "notify")
        loop = asyncio.get_running_loop()
        published = await loop.run_in_executor(None, lambda: self.service.scheduling.publish(
            path, name, _field(body, "description", str, None) or None,
            make_default=not _field(body, "keep_default", bool, False),
            notify=notify or None, notify_on=_strings(body, "notify_on")))
        self.reply(published, status=201 if published["created"] else 200)


class PublishedHandler(MlpipeHandler):
    @web.authenticated
    def get(self, name: str) -> None:
        self.reply(self.service.scheduling.published(name))


class TriggerHandler(MlpipeHandler):
    @web.authenticated
    async def post(self, name: str) -> None:
        body = self.json_body()
        version = _field(body, "version", int, None)
        if isinstance(version, bool):
            raise BadRequestError("field 'version' must be int")
        parameters = _field(body, "parameters", dict, {})
        sweep, yes = _sweep_field(body)
        loop = asyncio.get_running_loop()
        started = await loop.run_in_executor(
            None, lambda: self.service.scheduling.trigger(name, version, parameters, sweep, yes))
        self.reply(started, status=202)


class SchedulesHandler(MlpipeHandler):
    @web.authenticated
    def get(self) -> None:
        self.reply(self.service.scheduling.list_schedules())

    @web.authenticated
    async def post(self) -> None:
        request = _schedule_request(self.json_body())
        loop = asyncio.get_running_loop()
        created = await loop.run_in_executor(
            None, self.service.scheduling.create_schedule, request)
        self.reply(created, status=201)


class ScheduleHandler(MlpipeHandler):
    @web.authenticated
    def get(self, schedule: str) -> None:
        self.reply(self.service.scheduling.schedule(schedule))

    @web.authenticated
    async def put(self, schedule: str) -> None:
        """Edit: checked first, then the schedule is replaced under the same name."""
        request = _schedule_request(self.json_body(), editing=True)
        loop = asyncio.get_running_loop()
        replaced = await loop.run_in_executor(
            None, self.service.scheduling.replace_schedule, schedule, request)
        self.reply(replaced)

    @web.authenticated
    def delete(self, schedule: str) -> None:
        self.reply(self.service.scheduling.delete_schedule(schedule))


_SCHEDULE_FIELDS = ("pipeline", "name", "version", "cron", "timezone", "every", "on_dataset",
                    "parameters", "missed", "overlap", "retries", "retry_backoff", "timeout",
                    "notify", "notify_on", "keep_notify", "sweep")


def _known_fields(body: dict[str, Any], known: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise BadRequestError(f"{what} has no field {', '.join(map(repr, unknown))} "
                              f"(it takes {', '.join(known)})")


def _strings(body: dict[str, Any], name: str) -> list[str]:
    values = _field(body, name, list, [])
    if not all(isinstance(v, str) for v in values):
        raise BadRequestError(f"field {name!r} must be a list of strings")
    return list(values)


def _schedule_request(body: dict[str, Any], editing: bool = False) -> ScheduleRequest:
    """A schedule request's fields, type-checked (their values are the library's to check,
    all at once)."""
    _known_fields(body, _SCHEDULE_FIELDS, "a schedule")
    pipeline = _field(body, "pipeline", str, None)
    if not pipeline:
        raise BadRequestError("field 'pipeline' (a published pipeline's name) is required")
    integers = {}
    for name in ("version", "retries"):
        value = _field(body, name, int, None)
        if isinstance(value, bool):
            raise BadRequestError(f"field {name!r} must be int")
        integers[name] = value
    durations = {}
    for name in ("every", "retry_backoff", "timeout"):
        value = _field(body, name, (str, int, float), None)
        if isinstance(value, bool):
            raise BadRequestError(f"field {name!r} must be a duration (\"15m\") or seconds")
        durations[name] = value
    keep = _field(body, "keep_notify", list, [])
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in keep):
        raise BadRequestError("field 'keep_notify' must be a list of notification target ids")
    if keep and not editing:
        raise BadRequestError("field 'keep_notify' is for editing a schedule (PUT)")
    sweep = _field(body, "sweep", dict, None) or {}
    unknown = sorted(set(sweep) - set(_SWEEP_KEYS))
    if unknown:
        raise BadRequestError(f"field 'sweep' has unknown keys {', '.join(unknown)} "
                              f"(it takes {', '.join(_SWEEP_KEYS)})")
    items = _strings(sweep, "sweep") if sweep else []
    for key in ("samples", "seed"):
        if sweep.get(key) is not None and (isinstance(sweep[key], bool)
                                           or not isinstance(sweep[key], int)):
            raise BadRequestError(f"field 'sweep.{key}' must be an integer")
    return ScheduleRequest(
        pipeline=pipeline, name=_field(body, "name", str, None) or None,
        version=integers["version"], cron=_field(body, "cron", str, None),
        timezone=_field(body, "timezone", str, None) or "UTC", every=durations["every"],
        on_dataset=_field(body, "on_dataset", str, None),
        parameters=_field(body, "parameters", dict, {}),
        missed=_field(body, "missed", str, None) or "skip",
        overlap=_field(body, "overlap", str, None) or "skip",
        retries=integers["retries"] or 0, retry_backoff=durations["retry_backoff"],
        timeout=durations["timeout"], notify=_strings(body, "notify"),
        notify_on=_strings(body, "notify_on"), keep_notify=list(keep),
        sweep=items, samples=sweep.get("samples"), seed=sweep.get("seed"),
        yes=bool(_field(sweep, "yes", bool, False)))


class SchedulePauseHandler(MlpipeHandler):
    @web.authenticated
    def post(self, schedule: str) -> None:
        self.reply(self.service.scheduling.set_schedule_paused(schedule, True))


class ScheduleResumeHandler(MlpipeHandler):
    @web.authenticated
    def post(self, schedule: str) -> None:
        self.reply(self.service.scheduling.set_schedule_paused(schedule, False))


class DatasetsHandler(MlpipeHandler):
    @web.authenticated
    def get(self) -> None:
        self.reply(self.service.datasets.list_datasets())


class DatasetHandler(MlpipeHandler):
    @web.authenticated
    def get(self, dataset: str) -> None:
        self.reply(self.service.datasets.dataset(dataset))


class DatasetPreviewHandler(MlpipeHandler):
    @web.authenticated
    async def get(self, dataset: str, version: str) -> None:
        number = int(version)
        rows = self.int_argument("rows", 20) or 20
        loop = asyncio.get_running_loop()  # reading a table may take a moment
        found = await loop.run_in_executor(
            None, self.service.datasets.preview, dataset, number, rows)
        self.reply(found)


class OpenApiHandler(MlpipeHandler):
    @web.authenticated
    def get(self) -> None:
        self.reply(openapi_document())


def openapi_document() -> dict[str, Any]:
    """The shipped OpenAPI description of this API."""
    import yaml

    text = resources.files("mlpipe_jupyter.server").joinpath("openapi.yaml").read_text("utf-8")
    return dict(yaml.safe_load(text))


# -- live updates: server-sent events ---------------------------------------------------
class EventStreamHandler(MlpipeHandler):
    """Base of the streams: ``text/event-stream`` written until the client goes away."""

    closed = False

    def on_connection_close(self) -> None:
        self.closed = True

    def start_stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # proxies must not buffer the stream

    async def send(self, event: str, data: Any) -> bool:
        """Write one event; False once the client has gone."""
        if self.closed:
            return False
        self.write(f"event: {event}\ndata: {json.dumps(data)}\n\n")
        try:
            await self.flush()
        except StreamClosedError:
            self.closed = True
        return not self.closed


class EventsHandler(EventStreamHandler):
    """``run`` events with a run's summary whenever it changes, whoever runs it."""

    @web.authenticated
    async def get(self) -> None:
        self.start_stream()
        marker = self.service.change_marker()
        seen = self.service.recent_signatures()
        if not await self.send("ready", {"runs": len(seen)}):
            return
        last_write = time.monotonic()
        while not self.closed:
            await asyncio.sleep(WATCH_SECONDS)
            current = self.service.change_marker()
            if current != marker:
                marker = current
                signatures = self.service.recent_signatures()
                changed = [r for r, s in signatures.items() if seen.get(r) != s]
                seen = signatures
                for run_id in sorted(changed):
                    try:
                        summary = self.service.summary_of(run_id)
                    except MlpipeError:
                        continue
                    if not await self.send("run", summary):
                        return
                    last_write = time.monotonic()
            if time.monotonic() - last_write > KEEPALIVE_SECONDS:
                if not await self.send("keepalive", {}):
                    return
                last_write = time.monotonic()


class LogStreamHandler(EventStreamHandler):
    """``log`` events with new text of a step's log, then ``end`` when the step has ended."""

    @web.authenticated
    async def get(self, run: str, step: str) -> None:
        offset = self.int_argument("offset", 0) or 0
        chunk = self.service.read_log(run, step, offset=offset)  # errors answer before streaming
        self.start_stream()
        last_write = time.monotonic()
        while True:
            if chunk.text:
                if not await self.send("log", {"text": chunk.text, "offset": chunk.offset,
                                               "run_id": chunk.run_id}):
                    return
                last_write = time.monotonic()
            if chunk.final and not chunk.text:
                await self.send("end", {"offset": chunk.offset})
                self.finish()
                return
            if time.monotonic() - last_write > KEEPALIVE_SECONDS:
                if not await self.send("keepalive", {}):
                    return
                last_write = time.monotonic()
            await asyncio.sleep(WATCH_SECONDS)
            if self.closed:
                return
            chunk = self.service.read_log(run, step, offset=chunk.offset)


_RUN = r"(?P<run>[^/]+)"
_STEP = r"(?P<step>[^/]+)"
_NAME = r"(?P<name>[^/]+)"
_SCHEDULE = r"(?P<schedule>[^/]+)"
_SWEEP = r"(?P<sweep>[^/]+)"
_DATASET = r"(?P<dataset>[^/]+)"

ROUTES: list[tuple[str, type[MlpipeHandler]]] = [
    ("notebooks", NotebooksHandler),
    (r"notebooks/(?P<path>.+)", NotebookHandler),
    ("runs", RunsHandler),
    (f"runs/{_RUN}", RunHandler),
    (f"runs/{_RUN}/cancel", CancelHandler),
    (f"runs/{_RUN}/steps/{_STEP}", StepHandler),
    (f"runs/{_RUN}/steps/{_STEP}/rerun", RerunHandler),
    (f"runs/{_RUN}/steps/{_STEP}/log", LogHandler),
    (f"runs/{_RUN}/steps/{_STEP}/log/stream", LogStreamHandler),
    (f"runs/{_RUN}/steps/{_STEP}/output", OutputHandler),
    (f"runs/{_RUN}/steps/{_STEP}/output\\.html", OutputHtmlHandler),
    ("sweeps", SweepsHandler),
    (f"sweeps/{_SWEEP}", SweepHandler),
    (f"sweeps/{_SWEEP}/chart", SweepChartHandler),
    ("compare", CompareHandler),
    ("compare/chart", CompareChartHandler),
    ("published", PublishedListHandler),
    (f"published/{_NAME}", PublishedHandler),
    (f"published/{_NAME}/trigger", TriggerHandler),
    ("schedules", SchedulesHandler),
    (f"schedules/{_SCHEDULE}", ScheduleHandler),
    (f"schedules/{_SCHEDULE}/pause", SchedulePauseHandler),
    (f"schedules/{_SCHEDULE}/resume", ScheduleResumeHandler),
    ("datasets", DatasetsHandler),
    (f"datasets/{_DATASET}", DatasetHandler),
    (f"datasets/{_DATASET}/versions/(?P<version>[0-9]+)/preview", DatasetPreviewHandler),
    ("events", EventsHandler),
    (r"openapi\.json", OpenApiHandler),
]


def handlers(base_url: str) -> list[tuple[str, type[MlpipeHandler]]]:
    """The routes, anchored under the server's base URL."""
    return [(url_path_join(base_url, API_PREFIX, pattern) + "$", handler)
            for pattern, handler in ROUTES]
