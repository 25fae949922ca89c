"""The ``mlpipe`` command. It parses arguments and calls the library; nothing more."""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from mlpipe_jupyter.cli.notify import add_notify_arguments
from mlpipe_jupyter.cli.sweeps import (
    add_sweep_arguments,
    add_sweep_parser,
    parse_sweep_arguments,
    run_sweep_command,
)
from mlpipe_jupyter.errors import EXIT_CANCELED, EXIT_FAILED, EXIT_USAGE, MlpipeError, exit_code
from mlpipe_jupyter.model.pipeline import KALE
from mlpipe_jupyter.model.values import parameter_text
from mlpipe_jupyter.reports import seconds as _seconds
from mlpipe_jupyter.reports import table as _table
from mlpipe_jupyter.reports import when as _when

__all__ = ["EXIT_CANCELED", "EXIT_FAILED", "EXIT_USAGE", "build_parser", "main"]


def _store(create: bool = False) -> Any:
    from mlpipe_jupyter.store import Store

    return Store.open(create=create)


# -- commands ------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.executors import head_start

    # "local", the default target, is the one that runs steps naming none here: the first
    # local step's process forks now, while this command plans (the command's entry point,
    # ``cli.entry``, began it already, before the imports)
    if args.compute in (None, "local"):
        head_start.begin(Path(args.notebook))
    try:
        return _run_command(args)
    finally:
        head_start.end_unused()  # if no step took it (all reused, none local, a wrong guess)


def _run_command(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.cli.progress import ProgressPrinter
    from mlpipe_jupyter.model.parameters import parse_assignments
    from mlpipe_jupyter.runner.planning import Selection
    from mlpipe_jupyter.runner.runner import Runner, RunRequest

    request = RunRequest(
        notebook=Path(args.notebook),
        parameters=parse_assignments(args.param),
        compute=args.compute,
        env=args.env,
        selection=Selection(tuple(args.step), args.downstream, args.until, args.regenerate),
        max_parallel=args.max_parallel,
        experiment=args.experiment,
        published=args.published,
        run_id=args.run_id,
        dataset_versions=_dataset_pins(args.dataset_version),
        notify=tuple(args.notify),
        notify_on=tuple(args.notify_on),
        schedule=args.schedule,
    )
    spec = parse_sweep_arguments(args)
    if spec is not None:
        return run_sweep_command(args, request, spec)
    runner = Runner()
    if not args.quiet:
        runner.events.subscribe(ProgressPrinter(verbose=args.verbose))
    # SIGTERM (systemd, `timeout`, CI) and SIGHUP (the terminal closed) cancel like Ctrl-C:
    # the kernels are stopped and their files removed before the process exits.
    signal.signal(signal.SIGTERM, lambda *_: runner.cancel())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: runner.cancel())
    result = runner.run(request)
    for failure in result.failures:
        print(failure, file=sys.stderr)
    if args.json:
        print(json.dumps({"run_id": result.run_id, "status": result.status.value,
                          "steps": {k: v.value for k, v in result.step_status.items()}}))
    if result.status.value == "canceled":
        return EXIT_CANCELED
    return 0 if result.ok else EXIT_FAILED


def _dataset_pins(items: list[str]) -> dict[str, int]:
    from mlpipe_jupyter.errors import ParameterError

    pins: dict[str, int] = {}
    for item in items:
        name, _, version = item.partition("@")
        version = version.removeprefix("v")
        if not name or not version.isdigit():
            raise ParameterError(f"--dataset-version {item!r} must be NAME@vN")
        pins[name] = int(version)
    return pins


def cmd_check(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.notebook import load_pipeline
    from mlpipe_jupyter.store.workspace import find_workspace_dir
    from mlpipe_jupyter.validation import module_code

    pipeline = load_pipeline(Path(args.notebook))
    datasets = None
    workspace = find_workspace_dir()
    if workspace is not None and workspace.is_dir():  # a check needs no workspace: no run
        datasets = _store().datasets.versions()
    pipeline.validate(datasets, module_code(pipeline, Path(args.notebook).resolve().parent))
    kind = " (Kale tags)" if pipeline.kind == "kale" else ""
    print(f"{args.notebook}{kind}: {len(pipeline.steps)} steps, {len(pipeline.setup)} setup "
          "cells, OK")
    if pipeline.experiment:
        print(f"experiment: {pipeline.experiment}")
    for depth, layer in enumerate(pipeline.layers()):
        for name in layer:
            step = pipeline.step(name)
            after = ", ".join(sorted(pipeline.upstream(name))) or "-"
            print(f"  {depth}: {name} (cell {step.cell}) after: {after}")
            received = pipeline.flows_into(name)
            if received:
                print("       variables: " + "; ".join(
                    f"{flow.name} from {flow.producer}" for flow in received))
            for note in _step_notes(step, pipeline.kind == KALE):
                print(f"       {note}")
    params = pipeline.parameters()
    if params:
        print("parameters: " + ", ".join(f"{k}={parameter_text(v)}" for k, v in params.items()))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.conversion import convert

    pipeline = convert(Path(args.notebook), Path(args.output), force=args.force)
    print(f"wrote {args.output}: {len(pipeline.steps)} %%mlstep cells "
          f"({', '.join(pipeline.step_names)}), {len(pipeline.setup)} %%mlsetup cells")
    return 0


def _step_notes(step: Any, kale: bool) -> list[str]:
    """What a step's header says beyond its edges, for ``mlpipe check`` (a Kale step's
    parameters are those of the pipeline-parameters cell it uses)."""
    from mlpipe_jupyter.executors.base import resource_requests
    from mlpipe_jupyter.model.conditions import ALL_SUCCEEDED

    header = step.header
    notes = []
    if kale and header.params:
        notes.append("parameters: " + ", ".join(name for name, _ in header.params))
    if header.image:
        notes.append(f"image: {header.image}")
    requested = resource_requests(header.resources)
    if requested:
        notes.append("resources: " + ", ".join(requested))
    if header.labels:
        notes.append("labels: " + ", ".join(f"{k}={v}" for k, v in header.labels))
    if header.annotations:
        notes.append("annotations: " + ", ".join(f"{k}={v}" for k, v in header.annotations))
    if header.secrets:
        notes.append("secrets: " + ", ".join(use.describe() for use in header.secrets))
    if header.run_if != ALL_SUCCEEDED:
        notes.append(f"run-if: {header.run_if}")
    if header.condition is not None:
        notes.append(f"if: {header.condition.text}")
    if header.other_limits:
        notes.append("limits not applied: " + ", ".join(f"{k}={v}" for k, v in header.other_limits))
    return notes


def cmd_runs(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.reports import runs_table

    notebook = str(Path(args.notebook).resolve()) if args.notebook else None
    print(runs_table(_store(), notebook, args.limit, args.experiment, args.status, args.offset))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.runner.planning import unapplied_note
    from mlpipe_jupyter.runner.view import read_run

    store = _store()
    store.runs.mark_dead_runs()
    view = read_run(store, args.run)
    run = view.record
    assert run is not None  # read from the store
    git = run.git
    git_text = (f"{git['commit'][:10]} on {git.get('branch')}{' (dirty)' if git.get('dirty') else ''}"
                if git else "not a git repository")
    print(f"run {run.id}  {run.status.value}")
    print(f"  notebook:   {run.notebook}")
    print(f"  experiment: {run.experiment}")
    print(f"  started:    {_when(run.created_at)}   took: {_seconds(run.duration)}")
    print(f"  git:        {git_text}")
    if run.params:
        print("  parameters: " + ", ".join(f"{k}={parameter_text(v)}"
                                           for k, v in run.params.items()))
    if run.published:
        print(f"  published:  {run.published}")
    rows = []
    for step in view.steps:
        note = (step.error.splitlines()[0] if step.error
                else unapplied_note(step.decision) or step.condition_result or "")
        if step.reused:
            note = f"from run {step.reused_from}"
        # a reused step's metrics are its source run's (the view resolves them)
        shown = ", ".join(f"{k}={v}" for k, v in step.metrics.items())
        rows.append([step.name, step.status, _seconds(step.duration),
                     (step.fingerprint or "-")[:12], shown, note])
    print()
    print(_table(rows, ["STEP", "STATUS", "TIME", "FINGERPRINT", "METRICS", "NOTE"]))
    print(f"\noutput notebooks: {store.workspace.run_dir(run.id) / 'steps'}")
    notifications = store.notify.of_run(run.id)
    if notifications:
        print("\nnotifications:")
        print(_table([[n.channel, n.source, n.status, str(n.attempts), n.error or ""]
                      for n in notifications],
                     ["CHANNEL", "FROM", "STATUS", "ATTEMPTS", "ERROR"]))
    if run.error and run.status.value == "failed":
        print("\n" + run.error)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.reports import compare_text
    from mlpipe_jupyter.runner.compare import compare_runs

    comparison = compare_runs(_store(), args.runs)
    print(json.dumps(comparison.to_dict(), default=repr) if args.json
          else compare_text(comparison))
    return 0


def cmd_why(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.runner.explain import explain_step

    print("\n".join(explain_step(_store(), args.run, args.step)))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.runner.view import read_step

    store = _store()
    step = read_step(store, args.run, args.step)
    run_id = step.source_run_id  # a reused step's log is its source run's
    if run_id != step.run_id:
        print(f"(step '{args.step}' was reused: showing the log of run {run_id})", file=sys.stderr)
    path = step.log_path
    assert path is not None  # read from the store
    offset = 0
    while True:
        if path.exists():
            with path.open("r", encoding="utf-8", errors="replace") as handle:
                handle.seek(offset)
                chunk = handle.read()
                offset = handle.tell()
            sys.stdout.write(chunk)
            sys.stdout.flush()
        elif not args.follow:
            print(f"(no log: step '{args.step}' did not execute in run {run_id})", file=sys.stderr)
        if not args.follow or store.runs.step_run(run_id, args.step).status.is_final:
            return 0
        time.sleep(0.5)


def cmd_dataset(args: argparse.Namespace) -> int:
    if args.dataset_command == "register":
        store = _store(create=True)
        version, created = store.datasets.register(
            args.name, Path(args.path), tabular=args.tabular, description=args.description
        )
        what = "registered" if created else "unchanged, already"
        print(f"{what} dataset {version.ref} ({version.kind}, {version.files} files, "
              f"{version.bytes} bytes, fingerprint {version.fingerprint[:12]})")
        return 0
    store = _store()
    if args.dataset_command == "list":
        latest = store.datasets.all_latest()
        if not latest:
            print("no datasets registered (mlpipe dataset register NAME PATH)")
            return 0
        rows = [[d.name, f"v{d.version}", d.kind, str(d.files), str(d.bytes), _when(d.created_at),
                 d.source] for d in latest]
        print(_table(rows, ["NAME", "LATEST", "KIND", "FILES", "BYTES", "CREATED", "SOURCE"]))
        return 0
    versions = store.datasets.history(args.name)
    if args.version is not None:
        versions = [store.datasets.get(args.name, args.version)]
    for d in versions:
        print(f"{d.ref}  {d.kind}  {d.files} files  {d.bytes} bytes  created {_when(d.created_at)}")
        print(f"  fingerprint: {d.fingerprint}\n  path: {d.path}\n  source: {d.source}")
        if d.description:
            print(f"  description: {d.description}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.store.environments import EnvironmentSpec

    if args.env_command == "create":
        store = _store(create=True)
        spec = EnvironmentSpec(image=args.image, pip=tuple(args.pip), apt=tuple(args.apt))
        version, created = store.environments.create(args.name, spec)
        print(f"{'created' if created else 'unchanged, already'} environment {version.ref}: "
              f"{_describe_env(version.spec)}")
        if args.build:
            from mlpipe_jupyter.executors.docker.executor import DockerExecutor

            image = DockerExecutor(workspace=store.workspace).environment_fingerprint(args.name)
            print(f"image: {image}")
        return 0
    store = _store()
    if args.env_command == "list":
        names = store.environments.names()
        if not names:
            print("no environments (mlpipe env create NAME --pip PACKAGE ...)")
            return 0
        rows = []
        for name in names:
            latest = store.environments.get(name)
            rows.append([name, f"v{latest.version}", _describe_env(latest.spec), _when(latest.created_at)])
        print(_table(rows, ["NAME", "LATEST", "SPEC", "CREATED"]))
        return 0
    from mlpipe_jupyter.executors.docker.images import dockerfile, env_image_tag

    for version in store.environments.history(args.name):
        print(f"{version.ref}  created {_when(version.created_at)}  image {env_image_tag(version)}")
        print(f"  {_describe_env(version.spec)}")
    latest = store.environments.get(args.name)
    from mlpipe_jupyter.executors.docker.bootstrap import base_image_tag

    print("\nDockerfile of the latest version:\n" + dockerfile(latest, latest.spec.image or base_image_tag()))
    return 0


def _describe_env(spec: Any) -> str:
    parts = [f"image {spec.image or 'mlpipe base'}"]
    if spec.pip:
        parts.append("pip " + " ".join(spec.pip))
    if spec.apt:
        parts.append("apt " + " ".join(spec.apt))
    return "; ".join(parts)


def cmd_image(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.executors.docker.bootstrap import bootstrap_base_image
    from mlpipe_jupyter.executors.docker.engine import docker_client

    tag = bootstrap_base_image(docker_client(), force=args.force)
    print(f"base image ready: {tag}")
    return 0


def cmd_compute(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.cli.compute import run_compute_command

    return run_compute_command(args)


def cmd_datastore(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.cli.compute import run_datastore_command

    return run_datastore_command(args)


# -- parser ----------------------------------------------------------------------------------
class _OnlyCommand:
    """Subparsers that build one command's parser and skip the rest: what a command line
    naming that command needs. Building all ~60 parsers (argparse looks up a translation
    for each help string) took ~60 ms of every command."""

    def __init__(self, subparsers: Any, command: str) -> None:
        self.subparsers = subparsers
        self.command = command
        self.found = False

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name != self.command:
            return _SKIPPED
        self.found = True
        return self.subparsers.add_parser(name, **kwargs)


class _Skipped:
    """A skipped command's parser: whatever is called on it (``add_argument``,
    ``add_subparsers``, ``set_defaults`` ...) does nothing and returns it again."""

    def __getattr__(self, _name: str) -> Any:
        return self._ignore

    def _ignore(self, *_args: Any, **_kwargs: Any) -> _Skipped:
        return self


_SKIPPED = _Skipped()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``mlpipe`` parser; with ``command``, one holding only that command (the whole
    parser when there is no such command, so that the error lists them all)."""
    parser = argparse.ArgumentParser(
        prog="mlpipe", description="Notebook-native ML pipelines: run notebooks as pipelines."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    sub: Any = subparsers if command is None else _OnlyCommand(subparsers, command)

    run = sub.add_parser("run", help="run a notebook as a pipeline")
    run.add_argument("notebook")
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                     help="override a pipeline parameter (repeatable)")
    run.add_argument("--compute", help="compute target for steps that name none (default: local)")
    run.add_argument("--env", help="environment for steps that name none (container compute)")
    run.add_argument("--step", action="append", default=[], metavar="STEP",
                     help="run only this step (forced), reusing the rest (repeatable)")
    run.add_argument("--downstream", action="store_true", help="with --step: also its downstream steps")
    run.add_argument("--until", metavar="STEP", help="run STEP and its upstream steps only")
    run.add_argument("--regenerate", action="store_true", help="execute every step; reuse nothing")
    run.add_argument("--max-parallel", type=int, metavar="N",
                     help="steps executing at once (default: the number of cores)")
    run.add_argument("--experiment", help="experiment name (default: the notebook's name)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    run.add_argument("-v", "--verbose", action="store_true", help="also show queued steps")
    run.add_argument("--json", action="store_true", help="print the result as JSON at the end")
    # set by triggers and the scheduler: the run id is known before the run starts, the run
    # is marked with the published version, and a dataset trigger pins the version that fired
    run.add_argument("--run-id", help=argparse.SUPPRESS)
    run.add_argument("--published", metavar="NAME@vN", help=argparse.SUPPRESS)
    run.add_argument("--dataset-version", action="append", default=[], metavar="NAME@vN",
                     help="read this version of a dataset input that names none (repeatable)")
    add_notify_arguments(run, "notify when the run ends")
    run.add_argument("--schedule", help=argparse.SUPPRESS)  # set by the scheduler
    add_sweep_arguments(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a notebook's pipeline without running it")
    check.add_argument("notebook")
    check.set_defaults(func=cmd_check)

    convert = sub.add_parser(
        "convert", help="write a Kale-tagged notebook as the equivalent %%mlstep notebook",
        description="Write the %%mlstep notebook equivalent to a Kubeflow Kale notebook (cell "
                    "tags step:, prev:, imports, pipeline-parameters ...): one %%mlstep cell "
                    "per step, %%mlsetup cells for imports and functions, markdown kept. "
                    "The source notebook is not changed.")
    convert.add_argument("notebook", help="the Kale notebook")
    convert.add_argument("-o", "--output", required=True, metavar="OUT.ipynb",
                         help="the notebook to write")
    convert.add_argument("--force", action="store_true", help="overwrite OUT.ipynb if it exists")
    convert.set_defaults(func=cmd_convert)

    runs = sub.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--notebook")
    runs.add_argument("--experiment")
    runs.add_argument("--status", choices=["running", "succeeded", "failed", "canceled"])
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--offset", type=int, default=0)
    runs.set_defaults(func=cmd_runs)

    add_sweep_parser(sub)

    show = sub.add_parser("show", help="show a run and its steps")
    show.add_argument("run", nargs="?", default="latest", help="run id, prefix, or 'latest'")
    show.set_defaults(func=cmd_show)

    compare = sub.add_parser("compare", help="runs side by side: parameters, metrics, and "
                                             "what changed in each step's fingerprint")
    compare.add_argument("runs", nargs="+", metavar="RUN",
                         help="two or more run ids or prefixes; the first is the baseline")
    compare.add_argument("--json", action="store_true", help="the comparison as JSON")
    compare.set_defaults(func=cmd_compare)

    why = sub.add_parser("why", help="why a step was reused or re-ran")
    why.add_argument("run", help="run id, prefix, or 'latest'")
    why.add_argument("step")
    why.set_defaults(func=cmd_why)

    logs = sub.add_parser("logs", help="a step's output log")
    logs.add_argument("run", help="run id, prefix, or 'latest'")
    logs.add_argument("step")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing while it runs")
    logs.set_defaults(func=cmd_logs)

    dataset = sub.add_parser("dataset", help="register and inspect datasets")
    dsub = dataset.add_subparsers(dest="dataset_command", metavar="ACTION")
    dsub.required = True
    register = dsub.add_parser("register", help="register a file or folder as a new version")
    register.add_argument("name")
    register.add_argument("path")
    register.add_argument("--tabular", action="store_true", help="CSV/Parquet files, loadable as a DataFrame")
    register.add_argument("--description")
    dsub.add_parser("list", help="datasets with their latest version")
    dshow = dsub.add_parser("show", help="a dataset's versions")
    dshow.add_argument("name")
    dshow.add_argument("--version", type=int)
    dataset.set_defaults(func=cmd_dataset)

    env = sub.add_parser("env", help="environments for container steps")
    esub = env.add_subparsers(dest="env_command", metavar="ACTION")
    esub.required = True
    create = esub.add_parser("create", help="define (a new version of) an environment")
    create.add_argument("name")
    create.add_argument("--image", help="base image (default: mlpipe's runner base image)")
    create.add_argument("--pip", nargs="+", default=[], metavar="PACKAGE")
    create.add_argument("--apt", nargs="+", default=[], metavar="PACKAGE")
    create.add_argument("--build", action="store_true", help="build its image now")
    esub.add_parser("list", help="environments with their latest version")
    eshow = esub.add_parser("show", help="an environment's versions and Dockerfile")
    eshow.add_argument("name")
    env.set_defaults(func=cmd_env)

    image = sub.add_parser("image", help="container images")
    isub = image.add_subparsers(dest="image_command", metavar="ACTION")
    isub.required = True
    boot = isub.add_parser("bootstrap", help="build the runner base image without a registry")
    boot.add_argument("--force", action="store_true", help="build again even if present")
    image.set_defaults(func=cmd_image)

    from mlpipe_jupyter.cli.compute import add_compute_parser, add_datastore_parser
    from mlpipe_jupyter.cli.notify import add_parsers as add_notify_parsers
    from mlpipe_jupyter.cli.scheduling import add_parsers as add_scheduling_parsers
    from mlpipe_jupyter.cli.secrets import add_secret_parser

    add_scheduling_parsers(sub)
    add_notify_parsers(sub)
    add_compute_parser(sub, cmd_compute)
    add_datastore_parser(sub, cmd_datastore)
    add_secret_parser(sub)
    if isinstance(sub, _OnlyCommand) and not sub.found:
        return build_parser()
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    named = arguments[0] if arguments and not arguments[0].startswith("-") else None
    args = build_parser(named).parse_args(arguments)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a reader that went away is handled below
        return code
    except MlpipeError as error:
        print(f"mlpipe: {error}", file=sys.stderr)
        return exit_code(error)  # the one table, errors.OUTCOMES
    except KeyboardInterrupt:
        print("mlpipe: interrupted", file=sys.stderr)
        return EXIT_CANCELED
    except BrokenPipeError:
        # the reader went away (`mlpipe show latest | head`): not an error of ours; point
        # stdout at /dev/null so that the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def console_main() -> int:
    """The ``mlpipe`` command: ``main``, then an exit that skips the interpreter's last
    garbage collection. That collection walks every object the command made, to free them
    a moment before the process ends anyway: ~60 ms after every command here (measured
    after a run, 0.064-0.076 s against 0.012-0.015 s). Not for ``main`` called in a
    process that goes on (a kernel, a test)."""
    code = main()
    gc.freeze()  # frozen objects are left to the process's end
    return code


if __name__ == "__main__":
    sys.exit(console_main())
