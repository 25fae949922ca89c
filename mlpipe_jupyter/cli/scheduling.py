"""``mlpipe publish | published | trigger | schedule | scheduler``: parse, call, print."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from mlpipe_jupyter.cli.notify import add_notify_arguments, print_targets
from mlpipe_jupyter.cli.sweeps import add_sweep_options, parse_sweep_arguments
from mlpipe_jupyter.model.values import parameter_text
from mlpipe_jupyter.reports import table as _table
from mlpipe_jupyter.reports import when as _when


def _store(create: bool = False) -> Any:
    from mlpipe_jupyter.store import Store

    return Store.open(create=create)


def _params(items: list[str]) -> dict[str, str]:
    from mlpipe_jupyter.model.parameters import parse_assignments

    return parse_assignments(items)


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    cleaned = text.removeprefix("v")
    if not cleaned.isdigit():
        from mlpipe_jupyter.errors import ParameterError

        raise ParameterError(f"--version {text!r} must be a number such as 2 or v2")
    return int(cleaned)


def _duration(text: str | None, option: str) -> float | None:
    from mlpipe_jupyter.model.schedule_policies import parse_schedule_duration

    return None if text is None else parse_schedule_duration(text, option)


# -- publish / published ------------------------------------------------------------------------
def cmd_publish(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.scheduling.publishing import publish

    version, created = publish(_store(create=True), Path(args.notebook), args.name,
                               args.description, make_default=not args.keep_default,
                               notify=args.notify or None, notify_on=args.notify_on)
    if created:
        print(f"published {version.ref} ({len(version.steps)} steps, content {version.content_hash[:12]})"
              + ("; it is the default version" if version.is_default else ""))
    else:
        print(f"unchanged: {version.ref} has the same content ({version.content_hash[:12]})")
    print(f"  snapshot: {version.notebook}")
    return 0


def cmd_published(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.scheduling import publishing

    store = _store()
    action = args.published_command
    if action == "list":
        versions = publishing.list_published(store, args.name)
        if not versions:
            print("no published pipelines (mlpipe publish NOTEBOOK --name NAME)")
            return 0
        rows = [[v.name, f"v{v.version}", "yes" if v.is_default else "",
                 "disabled" if v.disabled else "enabled", str(len(v.steps)),
                 ", ".join(f"{k}={parameter_text(p)}" for k, p in v.parameters.items()),
                 _when(v.created_at)] for v in versions]
        print(_table(rows, ["NAME", "VERSION", "DEFAULT", "STATE", "STEPS", "PARAMETERS", "CREATED"]))
        return 0
    if action == "show":
        version = publishing.get_published(store, args.name, _version(args.version))
        if args.json:
            print(json.dumps(version.to_dict(), indent=2, default=str))
            return 0
        print(f"{version.ref}{'  (default)' if version.is_default else ''}"
              f"{'  DISABLED' if version.disabled else ''}")
        print(f"  published:   {_when(version.created_at)} from {version.source}")
        print(f"  snapshot:    {version.notebook}")
        print(f"  content:     {version.content_hash}")
        if version.git:
            print(f"  git:         {version.git.get('commit', '')[:10]} on {version.git.get('branch')}"
                  f"{' (dirty)' if version.git.get('dirty') else ''}")
        if version.description:
            print(f"  description: {version.description}")
        print("  parameters:  " + (", ".join(f"{k}={v!r}" for k, v in version.parameters.items()) or "none"))
        print("  datasets:    " + (", ".join(version.datasets) or "none"))
        if version.environments:
            print("  environments: " + ", ".join(f"{k}: {v}" for k, v in version.environments.items()))
        if version.files:
            print("  files:       " + ", ".join(version.files))
        from mlpipe_jupyter.store.notify import PUBLISHED

        print_targets(store.notify.targets(PUBLISHED, version.name))
        for step in version.steps:
            print(f"  step {step['name']}: in {', '.join(step['inputs']) or '-'}; "
                  f"out {', '.join(step['outputs']) or '-'}"
                  + (f"; uses {', '.join(step['uses'])}" if step.get("uses") else ""))
        return 0
    if action in ("disable", "enable"):
        changed = publishing.set_enabled(store, args.name, _version(args.version), action == "enable")
        for version in changed:
            print(f"{version.ref} {action}d")
        return 0
    version = publishing.set_default(store, args.name, int(_version(args.version) or 0))
    print(f"{version.ref} is now the default version of {version.name}")
    return 0


# -- trigger ----------------------------------------------------------------------------------------
def cmd_trigger(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.scheduling.triggering import prepare_run, start_run, wait_for_run

    store = _store()
    spec = parse_sweep_arguments(args)
    prepared = prepare_run(store, args.name, _version(args.version), _params(args.param),
                           sweep=spec, yes=args.yes)
    start_run(store, prepared)
    if spec is not None:
        return _trigger_sweep(args, store, prepared)
    if args.json and not args.wait:
        print(json.dumps({"run_id": prepared.run_id, "published": prepared.published.ref}))
        return 0
    if not args.wait:
        print(prepared.run_id)
        print(f"started run {prepared.run_id} of {prepared.published.ref} "
              f"(mlpipe show {prepared.run_id})", file=sys.stderr)
        return 0
    record = wait_for_run(store, prepared.run_id)
    if args.json:
        print(json.dumps({"run_id": record.id, "published": record.published,
                          "status": record.status.value}))
    else:
        print(f"run {record.id} of {record.published} {record.status.value}")
        if record.error and record.status.value == "failed":
            print(record.error, file=sys.stderr)
    return 0 if record.status.value == "succeeded" else 1


def _trigger_sweep(args: argparse.Namespace, store: Any, prepared: Any) -> int:
    """``mlpipe trigger NAME --sweep ...``: print the sweep's id (and wait for it)."""
    from mlpipe_jupyter.scheduling.triggering import wait_for_sweep

    sweep_id, ref = prepared.sweep_id, prepared.published.ref
    if not args.wait:
        if args.json:
            print(json.dumps({"sweep_id": sweep_id, "published": ref,
                              "members": prepared.sweep.size(),
                              "run_ids": prepared.member_run_ids}))
        else:
            print(sweep_id)
            print(f"started sweep {sweep_id} of {ref}: {prepared.sweep.size()} members "
                  f"(mlpipe sweep show {sweep_id})", file=sys.stderr)
        return 0
    record = wait_for_sweep(store, sweep_id)
    if args.json:
        print(json.dumps({"sweep_id": record.id, "published": record.published,
                          "status": record.status, "members": len(record.members),
                          "counts": record.counts(),
                          "run_ids": [m.run_id for m in record.members]}))
    else:
        from mlpipe_jupyter.reports import sweep_text
        from mlpipe_jupyter.runner.sweep_view import read_sweep

        print(sweep_text(read_sweep(store, record.id)))
    return 0 if record.status == "succeeded" else 1


# -- schedule ---------------------------------------------------------------------------------------
def cmd_schedule(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.scheduling import schedules

    action = args.schedule_command
    if action == "create":
        schedule = schedules.create_schedule(
            _store(), args.pipeline, name=args.name, version=_version(args.version),
            cron=args.cron, timezone_name=args.timezone, every_seconds=_duration(args.every, "--every"),
            on_dataset=args.on_dataset, params=_params(args.param), missed=args.missed,
            overlap=args.overlap, max_retries=args.retries,
            retry_backoff=_duration(args.retry_backoff, "--retry-backoff") or 0.0,
            timeout=_duration(args.timeout, "--timeout"),
            notify=args.notify, notify_on=args.notify_on,
            sweep=args.sweep, samples=args.samples, seed=args.seed, yes=args.yes,
        )
        print(f"created schedule {schedule.name}: {schedule.target}, {schedule.describe_trigger()}")
        if schedule.sweep:
            print(f"  each firing starts a sweep: {schedule.describe_sweep()}")
        _print_next(schedule)
        return 0
    store = _store()
    if action == "list":
        found = schedules.list_schedules(store, args.pipeline)
        if not found:
            print("no schedules (mlpipe schedule create PIPELINE --cron '0 6 * * *')")
            return 0
        rows = []
        for s in found:
            upcoming = s.next_fire_times(count=1)
            rows.append([s.name, s.target, s.describe_trigger(), s.describe_sweep() or "-",
                         "paused" if s.paused else "active",
                         _when(upcoming[0]) if upcoming else "-", _last(store, s)])
        print(_table(rows, ["NAME", "PIPELINE", "TRIGGER", "SWEEP", "STATE", "NEXT",
                            "LAST FIRING"]))
        return 0
    if action == "show":
        schedule = schedules.get_schedule(store, args.name)
        if args.json:
            data = schedule.to_dict()
            data["firings"] = [f.__dict__ for f in schedules.firings(store, schedule, args.limit)]
            print(json.dumps(data, indent=2, default=str))
            return 0
        _show(store, schedule, args.limit)
        return 0
    if action in ("pause", "resume"):
        schedule = schedules.set_paused(store, args.name, action == "pause")
        print(f"schedule {schedule.name} {'paused' if schedule.paused else 'resumed'}")
        _print_next(schedule)
        return 0
    schedule = schedules.delete_schedule(store, args.name)
    print(f"deleted schedule {schedule.name}")
    return 0


def _last(store: Any, schedule: Any) -> str:
    from mlpipe_jupyter.scheduling.schedules import firings

    last = firings(store, schedule, 1)
    return f"{last[0].fire_key} {last[0].status}" if last else "-"


def _print_next(schedule: Any) -> None:
    times = schedule.next_fire_times(count=3)
    if times:
        print("  next: " + ", ".join(_when(t) for t in times) + " (local time)")


def _show(store: Any, schedule: Any, limit: int) -> None:
    from mlpipe_jupyter.model.schedule_policies import format_duration
    from mlpipe_jupyter.scheduling.schedules import firings

    print(f"schedule {schedule.name}  {'PAUSED' if schedule.paused else 'active'}")
    print(f"  pipeline:   {schedule.target}")
    print(f"  trigger:    {schedule.describe_trigger()}")
    if schedule.params:
        print("  parameters: " + ", ".join(f"{k}={v}" for k, v in schedule.params.items()))
    if schedule.sweep:
        print(f"  sweep:      {schedule.describe_sweep()}, one per firing")
    timeout = format_duration(schedule.timeout) if schedule.timeout else "none"
    print(f"  policies:   missed {schedule.missed}, overlap {schedule.overlap}, "
          f"retries {schedule.max_retries} (back-off {format_duration(schedule.retry_backoff)} x4), "
          f"timeout {timeout}")
    print(f"  created:    {_when(schedule.created_at)}; missed fire times so far: {schedule.missed_total}")
    from mlpipe_jupyter.store.notify import SCHEDULE

    print_targets(store.notify.targets(SCHEDULE, schedule.name))
    _print_next(schedule)
    rows = [[f.fire_key, f.status, str(f.attempt), f.run_id or "-",
             (f.error or "").splitlines()[0][:80] if f.error else ""]
            for f in firings(store, schedule, limit)]
    if rows:
        print()
        # a schedule with a sweep starts a sweep per firing: the id is the sweep's
        print(_table(rows, ["FIRE", "STATUS", "ATTEMPT", "SWEEP" if schedule.sweep else "RUN",
                            "NOTE"]))


# -- scheduler --------------------------------------------------------------------------------------
def cmd_scheduler(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.scheduling.scheduler import Scheduler

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    Scheduler(_store(create=True), tick_seconds=args.tick).serve()
    return 0


# -- parsers ----------------------------------------------------------------------------------------
def add_parsers(sub: Any) -> None:
    """Add the scheduling commands to ``mlpipe``'s subparsers."""
    pub = sub.add_parser("publish", help="publish a notebook as an immutable, versioned pipeline")
    pub.add_argument("notebook")
    pub.add_argument("--name", required=True, help="the published pipeline's name")
    pub.add_argument("--description")
    pub.add_argument("--keep-default", action="store_true",
                     help="do not make the new version the default one")
    add_notify_arguments(pub, "notify when a run of this pipeline (any version) ends; "
                              "replaces its earlier --notify targets")
    pub.set_defaults(func=cmd_publish)

    published = sub.add_parser("published", help="list, show, disable published pipelines")
    psub = published.add_subparsers(dest="published_command", metavar="ACTION")
    psub.required = True
    plist = psub.add_parser("list", help="published versions")
    plist.add_argument("name", nargs="?")
    pshow = psub.add_parser("show", help="one version (the default unless --version)")
    pshow.add_argument("name")
    pshow.add_argument("--version")
    pshow.add_argument("--json", action="store_true")
    for action, text in (("disable", "disable"), ("enable", "enable again")):
        p = psub.add_parser(action, help=f"{text} one version (all versions without --version)")
        p.add_argument("name")
        p.add_argument("--version")
    pdefault = psub.add_parser("default", help="make VERSION the default version")
    pdefault.add_argument("name")
    pdefault.add_argument("version")
    published.set_defaults(func=cmd_published)

    trigger = sub.add_parser("trigger", help="start a run of a published pipeline; prints its id")
    trigger.add_argument("name")
    trigger.add_argument("--version", help="a version (default: the default version)")
    trigger.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    add_sweep_options(trigger, "start a run")
    trigger.add_argument("--wait", action="store_true",
                         help="wait for the run (or sweep) to end")
    trigger.add_argument("--json", action="store_true")
    trigger.set_defaults(func=cmd_trigger)

    schedule = sub.add_parser("schedule", help="schedules of published pipelines")
    ssub = schedule.add_subparsers(dest="schedule_command", metavar="ACTION")
    ssub.required = True
    create = ssub.add_parser("create", help="schedule a published pipeline")
    create.add_argument("pipeline", help="published pipeline name")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="five-field cron expression, e.g. '0 6 * * *'")
    when.add_argument("--every", help="fixed interval, e.g. 15m, 1h, 1d")
    when.add_argument("--on-dataset", metavar="DATASET",
                      help="run when DATASET gets a new version (the run reads that version)")
    create.add_argument("--timezone", default="UTC", help="IANA time zone of --cron (default UTC)")
    create.add_argument("--name", help="schedule name (default: PIPELINE-KIND)")
    create.add_argument("--version", help="pin a version (default: the default version at fire time)")
    create.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    create.add_argument("--missed", default="skip", choices=["skip", "run_once"],
                        help="fire times missed while no scheduler ran (default skip)")
    create.add_argument("--overlap", default="skip", choices=["skip", "queue"],
                        help="a fire time while the previous run is active (default skip)")
    create.add_argument("--retries", type=int, default=0, help="retries of a failed run (default 0)")
    create.add_argument("--retry-backoff", default="30s",
                        help="wait before the first retry, x4 for each next (default 30s)")
    create.add_argument("--timeout", help="stop a run after this long, e.g. 2h")
    add_sweep_options(create, "each firing starts a sweep: a run")
    add_notify_arguments(create, "notify when a run this schedule starts ends")
    slist = ssub.add_parser("list", help="schedules with their next fire time")
    slist.add_argument("--pipeline")
    sshow = ssub.add_parser("show", help="a schedule, its next fire times and latest firings")
    sshow.add_argument("name")
    sshow.add_argument("--limit", type=int, default=10)
    sshow.add_argument("--json", action="store_true")
    for action in ("pause", "resume", "delete"):
        ssub.add_parser(action, help=f"{action} a schedule").add_argument("name")
    schedule.set_defaults(func=cmd_schedule)

    scheduler = sub.add_parser("scheduler", help="run the scheduler in the foreground (SIGTERM stops it)")
    scheduler.add_argument("--tick", type=float, default=1.0, help="seconds between passes")
    scheduler.add_argument("-v", "--verbose", action="store_true")
    scheduler.set_defaults(func=cmd_scheduler)
