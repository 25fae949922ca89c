"""The sweep widget: a sweep's members as a table, and a chart of a metric against a
parameter, both read from the store (``runner.sweep_view``), live while the sweep runs.

Built from ipywidgets (a table in HTML, two dropdowns, an Output); the chart is a
Vega-Lite spec that JupyterLab renders with the Vega renderer it ships
(``application/vnd.vegalite.v5+json``), so no chart code of ours runs in the browser.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable

import ipywidgets as widgets

from mlpipe_jupyter.events import RUN_FINISHED, RUN_STARTED, EventBus, RunEvent
from mlpipe_jupyter.model.values import parameter_text
from mlpipe_jupyter.reports import value_text
from mlpipe_jupyter.runner.sweep_view import SweepView, chart_spec, read_sweep
from mlpipe_jupyter.store import Store

VEGA_LITE = "application/vnd.vegalite.v5+json"
FOLLOW_SECONDS = 1.0  # the most often a followed sweep's widget reads the store

_STYLE = """<style>
.mlpipe-sweep table { border-collapse: collapse; font-size: var(--jp-code-font-size, 12px); }
.mlpipe-sweep th, .mlpipe-sweep td { padding: 2px 8px; text-align: right;
  border-bottom: 1px solid var(--jp-border-color2, #ddd); white-space: nowrap; }
.mlpipe-sweep th { color: var(--jp-ui-font-color1, #333); }
.mlpipe-sweep tr.mlpipe-best td { font-weight: bold; background: var(--jp-success-color3, #e6f4ea); }
.mlpipe-sweep td.mlpipe-status-failed { color: var(--jp-error-color1, #b71c1c); }
</style>"""


def table_html(view: SweepView) -> str:
    """The members as an HTML table (values escaped), the best row marked with ★."""
    record = view.record
    counts = ", ".join(f"{n} {s}" for s, n in sorted(record.counts().items()))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["", "#", "run", "status", *view.parameters, *view.metrics])
    rows = []
    for row in view.rows:
        cells = ["★" if row.best else "", str(row.position), row.run_id, row.status,
                 *(parameter_text(row.params.get(p)) for p in view.parameters),
                 *(value_text(row.metrics[m]) if m in row.metrics else "–" for m in view.metrics)]
        tds = "".join(
            f'<td class="mlpipe-status-{html.escape(row.status)}">{html.escape(c)}</td>'
            if i == 3 else f"<td>{html.escape(c)}</td>" for i, c in enumerate(cells))
        rows.append(f'<tr class="{"mlpipe-best" if row.best else ""}">{tds}</tr>')
    ranked = (f"; ★ best by {html.escape(view.sort)} "
              f"({'lowest' if view.ascending else 'highest'})") if view.sort else ""
    return (f'{_STYLE}<div class="mlpipe-sweep"><b>sweep {html.escape(record.id)}</b>: '
            f"{html.escape(record.status)}, {len(record.members)} members ({html.escape(counts)})"
            f"{ranked}<table><tr>{head}</tr>{''.join(rows)}</table></div>")


class SweepWidget(widgets.VBox):  # type: ignore[misc]
    """A sweep's table and chart. ``refresh()`` re-reads the store; ``follow(events)``
    refreshes whenever a member starts or ends."""

    def __init__(self, sweep_id: str, store: Callable[[], Store] = Store.open,
                 sort: str | None = None, ascending: bool = False) -> None:
        self.sweep_id = sweep_id
        self._open_store = store
        self._store: Store | None = None
        self._sort = sort
        self._ascending = ascending
        self._lock = threading.Lock()
        self._last_refresh = 0.0  # time.monotonic() of the last refresh
        self._held: threading.Timer | None = None  # a refresh due at the interval's end
        self.view: SweepView | None = None
        self.table = widgets.HTML()
        self.metric = widgets.Dropdown(description="metric", layout={"width": "320px"})
        self.parameter = widgets.Dropdown(description="against", layout={"width": "240px"})
        self.chart = widgets.Output()
        self.metric.observe(lambda _: self._draw_chart(), names="value")
        self.parameter.observe(lambda _: self._draw_chart(), names="value")
        super().__init__([self.table, widgets.HBox([self.metric, self.parameter]), self.chart])
        self.add_class("mlpipe-sweep-widget")

    def store(self) -> Store:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def refresh(self) -> None:
        with self._lock:
            self._last_refresh = time.monotonic()
            view = read_sweep(self.store(), self.sweep_id, self._sort, self._ascending)
            self.view = view
            self.table.value = table_html(view)
            with self.hold_sync():
                if tuple(self.metric.options) != view.metrics:
                    self.metric.options = view.metrics
                    self.metric.value = view.sort if view.sort in view.metrics else None
                if tuple(self.parameter.options) != view.parameters:
                    self.parameter.options = view.parameters
                    self.parameter.value = view.parameters[0] if view.parameters else None
        self._draw_chart()

    def follow(self, events: EventBus) -> Callable[[], None]:
        """Refresh as members start and end, at most once per ``FOLLOW_SECONDS`` (the
        events come from the runner's thread, and a refresh reads every member): a
        refresh held back runs when the interval ends. Returns the unsubscribe function."""
        def on_event(event: RunEvent) -> None:
            if event.kind in (RUN_STARTED, RUN_FINISHED) and \
                    event.detail.get("sweep", self.sweep_id) == self.sweep_id:
                self._refresh_soon()
        return events.subscribe(on_event)

    def _refresh_soon(self) -> None:
        with self._lock:
            if self._held is not None:
                return  # a refresh is already due at the end of the interval
            wait = self._last_refresh + FOLLOW_SECONDS - time.monotonic()
            if wait > 0:
                self._held = threading.Timer(wait, self._held_refresh)
                self._held.daemon = True
                self._held.start()
                return
        self.refresh()

    def flush(self) -> None:
        """Refresh now, with no refresh held back (the sweep has ended)."""
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            held.cancel()
        self.refresh()

    def _held_refresh(self) -> None:
        with self._lock:
            self._held = None
        self.refresh()

    def _draw_chart(self) -> None:
        view, metric, parameter = self.view, self.metric.value, self.parameter.value
        if view is None or not metric or not parameter:
            self.chart.outputs = ()
            return
        spec = chart_spec(view, metric, parameter)
        # set from any thread (the runner's): ``with output:`` only works in the kernel's
        self.chart.outputs = ({
            "output_type": "display_data",
            # vega-embed options: SVG (sharp, and its marks can be inspected)
            "metadata": {VEGA_LITE: {"embed_options": {"renderer": "svg"}}},
            "data": {VEGA_LITE: spec, "text/plain": f"<chart: {spec['title']}>"},
        },)

    def summary(self) -> str:
        from mlpipe_jupyter.reports import sweep_text

        return sweep_text(self.view) if self.view else f"sweep {self.sweep_id}"

    def __repr__(self) -> str:
        return self.summary()


def show_sweep(store: Store, ref: str = "latest", sort: str | None = None,
               ascending: bool = False) -> SweepWidget:
    """A widget for a past (or running) sweep."""
    widget = SweepWidget(store.sweeps.resolve(ref), lambda: store, sort, ascending)
    widget.refresh()
    return widget


__all__ = ["SweepWidget", "show_sweep", "table_html"]
