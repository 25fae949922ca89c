"""``mlpipe run NB --sweep ...`` and ``mlpipe sweep show/list`` (docs/workflows.md)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mlpipe_jupyter.errors import EXIT_CANCELED, EXIT_FAILED, ParameterError
from mlpipe_jupyter.reports import seconds as _seconds
from mlpipe_jupyter.reports import table as _table
from mlpipe_jupyter.reports import when as _when


def add_sweep_options(parser: argparse.ArgumentParser, what: str = "run") -> None:
    """``--sweep``, ``--samples``, ``--seed`` and ``--yes`` (``mlpipe run``, ``mlpipe
    trigger``, ``mlpipe schedule create``); ``what`` is what runs once per value."""
    parser.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
                        help=f"{what} once per value of parameter NAME (repeatable: the grid "
                             "of combinations); NAME=uniform(LOW,HIGH), loguniform(LOW,HIGH) "
                             "or randint(LOW,HIGH) samples a range (needs --samples)")
    parser.add_argument("--samples", type=int, metavar="N",
                        help="random search: N members, each value drawn from its --sweep")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="with --samples: the draw (default 0)")
    parser.add_argument("--yes", action="store_true",
                        help="start a sweep of more than 500 members without asking")


def add_sweep_arguments(run: argparse.ArgumentParser) -> None:
    """The sweep options of ``mlpipe run``."""
    add_sweep_options(run)
    run.add_argument("--sweep-id", help=argparse.SUPPRESS)  # set by triggers and schedules


def parse_sweep_arguments(args: argparse.Namespace) -> Any:
    """The SweepSpec the arguments ask for, or None for an ordinary run."""
    from mlpipe_jupyter.model.sweep import SweepSyntaxError, requested_sweep

    try:
        return requested_sweep(args.sweep, args.samples, args.seed)
    except SweepSyntaxError as exc:
        raise ParameterError.of(exc.issues) from None


def run_sweep_command(args: argparse.Namespace, request: Any, spec: Any) -> int:
    """``mlpipe run --sweep``: the sweep with live progress, then its results table."""
    import signal

    from mlpipe_jupyter.cli.progress import SweepProgressPrinter
    from mlpipe_jupyter.reports import sweep_text
    from mlpipe_jupyter.runner.runner import Runner
    from mlpipe_jupyter.runner.sweep import SweepRequest, run_sweep
    from mlpipe_jupyter.runner.sweep_view import read_sweep
    from mlpipe_jupyter.store import Store

    runner = Runner()
    if not args.quiet:
        described = spec.describe()
        if len(described) > 100:
            described = described[:97] + "..."
        title = f"sweep of {request.notebook}: {spec.size()} members ({described})"
        runner.events.subscribe(SweepProgressPrinter(spec.size(), title, verbose=args.verbose))
    signal.signal(signal.SIGTERM, lambda *_: runner.cancel())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: runner.cancel())
    result = run_sweep(SweepRequest(request, spec, args.yes, args.sweep_id), runner)
    for failure in result.failures:
        print(failure, file=sys.stderr)
    view = read_sweep(Store.open(), result.sweep_id)
    if args.json:
        print(json.dumps(view.to_dict(), default=repr))
    elif not args.quiet:
        print(sweep_text(view))
    if result.status.value == "canceled":
        return EXIT_CANCELED
    return 0 if result.ok else EXIT_FAILED


def add_sweep_parser(sub: Any) -> None:
    """``mlpipe sweep show|list``."""
    sweep = sub.add_parser("sweep", help="parameter sweeps: results per member")
    ssub = sweep.add_subparsers(dest="sweep_command", metavar="ACTION")
    ssub.required = True
    show = ssub.add_parser("show", help="a sweep's members: parameters and metrics, the best "
                                        "one marked")
    show.add_argument("sweep", nargs="?", default="latest", help="sweep id, prefix or 'latest'")
    show.add_argument("--sort", metavar="METRIC",
                      help="rank members by METRIC (STEP.METRIC, or METRIC when one step logs "
                           "it); highest first (default: the first metric)")
    show.add_argument("--ascending", action="store_true", help="with --sort: lowest first "
                                                               "(for losses and errors)")
    show.add_argument("--json", action="store_true", help="the table as JSON")
    listing = ssub.add_parser("list", help="sweeps, newest first")
    listing.add_argument("--limit", type=int, default=20)
    sweep.set_defaults(func=run_sweep_subcommand)


def run_sweep_subcommand(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.reports import sweep_text
    from mlpipe_jupyter.runner.sweep_view import read_sweep
    from mlpipe_jupyter.store import Store

    store = Store.open()
    if args.sweep_command == "show":
        view = read_sweep(store, args.sweep, args.sort, args.ascending)
        print(json.dumps(view.to_dict(), default=repr) if args.json else sweep_text(view))
        return 0
    store.runs.mark_dead_runs()
    sweeps = store.sweeps.list(args.limit)
    if not sweeps:
        print("no sweeps yet (start one with `mlpipe run NB --sweep NAME=V1,V2`)")
        return 0
    rows = []
    for record in sweeps:
        took = (record.ended_at - record.created_at) if record.ended_at else None
        counts = ", ".join(f"{n} {s}" for s, n in sorted(record.counts().items()))
        rows.append([record.id, record.status, _when(record.created_at), _seconds(took),
                     str(len(record.members)), counts,
                     " ".join(record.spec.get("sweep", []))])
    print(_table(rows, ["SWEEP", "STATUS", "STARTED", "TIME", "MEMBERS", "RUNS", "SWEPT"]))
    return 0
