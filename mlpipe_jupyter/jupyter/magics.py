"""IPython magics: ``%%mlstep``, ``%%mlsetup`` and ``%mlpipe``.

They parse their line and call the library (``mlpipe_jupyter.interactive``, the runner, the
store); mistakes are one-line ``UsageError``s, shown without a traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.display import display

from mlpipe_jupyter.errors import MlpipeError
from mlpipe_jupyter.interactive import (
    PipelineRegistry,
    activate_step,
    bind_step,
    cell_source,
    check_setup_line,
    find_notebook,
    finish_step,
    interactive_notebook_path,
    parse_header,
    parse_variable_ref,
    saved_variable,
    scratch_dir,
)
from mlpipe_jupyter.model.conditions import ALL_SUCCEEDED
from mlpipe_jupyter.model.grammar import SETUP_MAGIC, STEP_MAGIC
from mlpipe_jupyter.store import Store

F = TypeVar("F", bound=Callable[..., Any])


def _friendly(method: F) -> F:
    """Our own errors become one-line UsageErrors: the user needs the message, not a trace."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except MlpipeError as exc:
            raise UsageError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    """The ``%mlpipe`` command line."""
    parser = MagicArgumentParser(prog="%mlpipe", description="Run and inspect pipelines.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run this notebook as a pipeline, in the background")
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--compute", metavar="NAME", help="default compute target")
    run.add_argument("--step", action="append", default=[], metavar="STEP",
                     help="run (and force) only this step")
    run.add_argument("--downstream", action="store_true", help="... and its downstream steps")
    run.add_argument("--until", metavar="STEP", help="this step and its upstream steps only")
    run.add_argument("--regenerate", action="store_true", help="execute every selected step")
    run.add_argument("--max-parallel", type=int, metavar="N")
    run.add_argument("--wait", action="store_true", help="block until the run ends")
    run.add_argument("--notify", action="append", default=[], metavar="SPEC",
                     help="notify when the run ends: webhook:URL[#secret=NAME], "
                          "email:ADDRESS, apprise:URL (repeatable)")
    run.add_argument("--notify-on", action="append", default=[], metavar="STATUSES",
                     help="succeeded,failed,canceled or all (default: failed,canceled)")
    run.add_argument("--registered", action="store_true",
                     help="run the cells registered in this kernel, even if the file is known")
    run.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
                     help="a sweep: one run per value (repeatable: the grid); "
                          "NAME=uniform(LOW,HIGH)/loguniform/randint with --samples")
    run.add_argument("--samples", type=int, metavar="N", help="random search: N members")
    run.add_argument("--seed", type=int, metavar="S", help="with --samples (default 0)")
    run.add_argument("--yes", action="store_true", help="run a sweep of over 500 members")
    sweep = sub.add_parser("sweep", help="a sweep's table and chart (default: the latest)")
    sweep.add_argument("sweep", nargs="?", default="latest")
    sweep.add_argument("--sort", metavar="METRIC", help="rank members by METRIC")
    sweep.add_argument("--ascending", action="store_true", help="lowest first")
    runs = sub.add_parser("runs", help="recent runs of this notebook")
    runs.add_argument("--all", action="store_true", help="runs of every notebook")
    runs.add_argument("-n", "--limit", type=int, default=10)
    status = sub.add_parser("status", help="the steps of the current (or latest) run")
    status.add_argument("run", nargs="?")
    why = sub.add_parser("why", help="why a step was reused, executed or skipped")
    why.add_argument("step")
    why.add_argument("run", nargs="?", help="default: the latest run of this notebook")
    sub.add_parser("cancel", help="cancel the run started from this kernel")
    show = sub.add_parser("show", help="draw a run's DAG (default: the latest)")
    show.add_argument("run", nargs="?")
    load = sub.add_parser("load", help="load variables that a pipeline run saved")
    load.add_argument("refs", nargs="+", metavar="STEP.NAME")
    load.add_argument("--run", metavar="RUN",
                      help="default: this notebook's latest run in which STEP succeeded")
    return parser


@magics_class
class MlpipeMagics(Magics):
    """The magics of ``%load_ext mlpipe_jupyter``; one instance (and registry) per kernel."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.ip: Any = shell  # IPython types Magics.shell as None; this is the same shell
        self.registry = PipelineRegistry()
        self.current: Any = None  # the BackgroundRun started from this kernel, if any
        self.widget: Any = None  # the DagWidget of that run
        self._cell_id: str | None = None
        self._parser = build_parser()
        shell.events.register("pre_run_cell", self._remember_cell)

    def _remember_cell(self, info: Any = None) -> None:
        # The front-end's cell id keys registrations, so re-running a renamed step replaces it.
        self._cell_id = getattr(info, "cell_id", None)

    def notebook(self) -> Path | None:
        """The notebook file of this kernel, when the front-end says which."""
        return find_notebook(self.ip.user_ns)

    # -- cell magics --------------------------------------------------------------------------
    @cell_magic
    @no_var_expand  # the header means what `mlpipe run` reads in the file: no $x or {x}
    @_friendly
    def mlstep(self, line: str, cell: str) -> None:
        """``%%mlstep NAME [--input ...] [--output ...] [--param ...] [--no-run]``: run the
        cell as the step NAME (inputs, outputs and parameters bound) and register it."""
        cell_id = self._cell_id
        header = parse_header(line)
        self.registry.register_step(header.name, cell_source(STEP_MAGIC, line, cell), cell_id)
        if header.no_run:
            print(f"registered step '{header.name}' (not run: --no-run)")
            return
        gates = [f"--if {header.condition.text}" if header.condition else "",
                 f"--run-if {header.run_if}" if header.run_if != ALL_SUCCEEDED else ""]
        if any(gates):  # a cell the user runs by hand always runs: say so
            print(f"note: {' and '.join(g for g in gates if g)} apply in pipeline runs; "
                  "run by hand, the cell runs")
        notebook = self.notebook()
        store = Store.open(create=True)
        binding = bind_step(store, header, self.registry, notebook, self.ip.user_ns)
        if binding.variables:
            print("not defined in this kernel, loaded as the pipeline saved them: " + "; ".join(
                saved.describe() for saved in binding.variables.values()))
        self.ip.user_ns.update(activate_step(binding, notebook))
        result = self.ip.run_cell(cell, store_history=False)
        finish_step(self.registry, binding, result.success)
        if not result.success:
            # An error status stops "Run All" here, as the failed cell would without the magic.
            raise UsageError(
                f"step '{header.name}' failed (see above); it is registered, but its scratch "
                f"outputs in {scratch_dir(store, header.name)} are incomplete"
            )

    @cell_magic
    @_friendly
    def mlsetup(self, line: str, cell: str) -> None:
        """``%%mlsetup``: run the cell here and before every step of a pipeline run."""
        cell_id = self._cell_id
        check_setup_line(line)
        self.registry.register_setup(cell_source(SETUP_MAGIC, line, cell), cell_id)
        result = self.ip.run_cell(cell, store_history=False)
        if not result.success:
            raise UsageError("the setup cell failed (see above); it is registered all the same")

    # -- %mlpipe ------------------------------------------------------------------------------
    @line_magic
    @_friendly
    def mlpipe(self, line: str) -> None:
        """``%mlpipe run|runs|status|why|cancel|show|load ...`` (``%mlpipe -h`` for help)."""
        try:
            args = self._parser.parse_args(self._split(line))
        except SystemExit:  # -h printed the help
            return
        command = args.command or "status"
        getattr(self, f"_cmd_{command}")(args)

    @staticmethod
    def _split(line: str) -> list[str]:
        from IPython.utils.process import arg_split

        return list(arg_split(line, posix=True))

    def _cmd_run(self, args: argparse.Namespace) -> None:
        from mlpipe_jupyter.jupyter.sweep_widget import SweepWidget
        from mlpipe_jupyter.jupyter.widget import DagWidget, watch_run
        from mlpipe_jupyter.model.parameters import parse_assignments
        from mlpipe_jupyter.runner.background import BackgroundRun
        from mlpipe_jupyter.runner.planning import Selection
        from mlpipe_jupyter.runner.runner import RunRequest

        if self.current is not None and self.current.running:
            raise UsageError(
                f"run {self.current.run_id} is still running: wait, or `%mlpipe cancel` it"
            )
        notebook = None if args.registered else self.notebook()
        if notebook is not None:
            print(f"running the saved notebook {notebook} (save it to include unsaved edits)")
        else:
            notebook = self.registry.write_notebook(interactive_notebook_path())
            steps = ", ".join(self.registry.step_names)
            print(f"running the steps registered in this kernel ({steps}), "
                  f"written to {notebook}")
        request = RunRequest(
            notebook=notebook,
            parameters=parse_assignments(args.param),
            compute=args.compute,
            selection=Selection(tuple(args.step), args.downstream, args.until, args.regenerate),
            max_parallel=args.max_parallel,
            notify=tuple(args.notify),
            notify_on=tuple(args.notify_on),
        )
        spec = _sweep_spec(args)
        run = BackgroundRun(request, sweep=spec, yes=args.yes)
        if spec is not None:
            widget = SweepWidget(run.sweep_id or "")
            widget.follow(run.events)
        else:
            widget = DagWidget()
            watch_run(widget, run.events)
        run.start()
        if run.error is not None:
            if isinstance(run.error, MlpipeError):
                raise UsageError(str(run.error))
            raise run.error
        self.current, self.widget = run, widget
        display(widget)
        if args.wait:
            self._wait(run)
        elif spec is not None:
            print(f"sweep {run.sweep_id} ({spec.size()} members) goes on in the background: "
                  "`%mlpipe sweep`, `%mlpipe cancel`")
        else:
            print(f"run {run.run_id} goes on in the background: `%mlpipe status`, "
                  "`%mlpipe cancel`")

    def _wait(self, run: Any) -> None:
        try:
            while not run.wait(0.2):
                pass
        except KeyboardInterrupt:
            print("canceling the run...", file=sys.stderr)
            run.cancel()
            run.wait()
        if run.error is not None:
            raise run.error
        took = time.time() - run.started_at
        if run.sweep_result is not None:
            if hasattr(self.widget, "flush"):
                self.widget.flush()  # its last refresh may be held back (SweepWidget.follow)
            sweep = run.sweep_result
            print(f"sweep {sweep.sweep_id} {sweep.status.value} in {took:.1f}s "
                  f"({len(sweep.members)} members)")
            for failure in sweep.failures:
                print(failure, file=sys.stderr)
            return
        result = run.result
        print(f"run {result.run_id} {result.status.value} in {took:.1f}s")
        for failure in result.failures:
            print(failure, file=sys.stderr)

    def _this_notebook(self) -> str | None:
        notebook = self.notebook()
        if notebook is None and interactive_notebook_path().exists():
            notebook = interactive_notebook_path()
        return str(notebook) if notebook else None

    def _latest_ref(self, store: Store) -> str:
        """The run started from this kernel, else this notebook's latest, else the latest."""
        if self.current is not None and self.current.run_id:
            return str(self.current.run_id)
        notebook = self._this_notebook()
        if notebook:
            runs = store.runs.list_runs(notebook, limit=1)
            if runs:
                return runs[0].id
        return "latest"

    def _cmd_runs(self, args: argparse.Namespace) -> None:
        from mlpipe_jupyter.reports import runs_table

        notebook = None if args.all else self._this_notebook()
        print(runs_table(Store.open(), notebook, args.limit))

    def _cmd_status(self, args: argparse.Namespace) -> None:
        from mlpipe_jupyter.reports import status_text

        store = Store.open()
        print(status_text(store, args.run or self._latest_ref(store)))

    def _cmd_why(self, args: argparse.Namespace) -> None:
        from mlpipe_jupyter.runner.explain import explain_step

        store = Store.open()
        print("\n".join(explain_step(store, args.run or self._latest_ref(store), args.step)))

    def _cmd_cancel(self, args: argparse.Namespace) -> None:
        if self.current is None or not self.current.running:
            print("no run started from this kernel is running")
            return
        self.current.cancel()
        what = (f"sweep {self.current.sweep_id}" if self.current.sweep_id
                else f"run {self.current.run_id}")
        print(f"canceling {what}: its kernels are being stopped")

    def _cmd_sweep(self, args: argparse.Namespace) -> None:
        from mlpipe_jupyter.jupyter.sweep_widget import show_sweep

        display(show_sweep(Store.open(), args.sweep, args.sort, args.ascending))

    def _cmd_show(self, args: argparse.Namespace) -> None:
        from mlpipe_jupyter.jupyter.widget import show_run

        store = Store.open()
        display(show_run(store, args.run or self._latest_ref(store)))

    def _cmd_load(self, args: argparse.Namespace) -> None:
        """Every variable is found and loaded before any is set: all or nothing."""
        refs = [parse_variable_ref(ref) for ref in args.refs]
        store = Store.open()
        notebook = None if args.run else self._this_notebook()
        loaded, problems = [], []
        for step, name in refs:
            try:
                loaded.append(saved_variable(store, step, name, args.run, notebook))
            except MlpipeError as exc:
                problems.append(f"{step}.{name}: {exc}")
        if problems:
            raise MlpipeError("\n".join(problems))
        for saved in loaded:
            self.ip.user_ns[saved.name] = saved.value
            print(f"loaded {saved.describe()}")


def _sweep_spec(args: argparse.Namespace) -> Any:
    """The sweep that ``%mlpipe run`` asks for, or None."""
    from mlpipe_jupyter.model.sweep import SweepSyntaxError, requested_sweep

    try:
        return requested_sweep(args.sweep, args.samples, args.seed)
    except SweepSyntaxError as exc:
        raise UsageError(str(exc)) from None


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics with ``ipython`` (``%load_ext mlpipe_jupyter``)."""
    ipython.register_magics(MlpipeMagics(ipython))


def registry_of(ipython: Any) -> PipelineRegistry:
    """The pipeline registry of the magics loaded into ``ipython``."""
    magics = ipython.magics_manager.registry.get("MlpipeMagics")
    if magics is None:
        raise MlpipeError("the mlpipe magics are not loaded: %load_ext mlpipe_jupyter")
    return magics.registry  # type: ignore[no-any-return]
