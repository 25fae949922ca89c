"""``mlpipe notify`` (where runs notify) and ``mlpipe config`` (workspace settings), and the
``--notify``/``--notify-on`` options of ``run``, ``publish`` and ``schedule create``."""

from __future__ import annotations

import argparse
from typing import Any

from mlpipe_jupyter.reports import table as _table

SPEC_HELP = ("webhook:URL[#secret=NAME], email:ADDRESS[,ADDRESS], apprise:URL "
             "(repeatable; docs/notifications.md)")
ON_HELP = "statuses that notify: succeeded,failed,canceled or all (default: failed,canceled)"


def add_notify_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--notify", action="append", default=[], metavar="SPEC",
                        help=f"{what}: {SPEC_HELP}")
    parser.add_argument("--notify-on", action="append", default=[], metavar="STATUSES",
                        help=ON_HELP)


def _store(create: bool = False) -> Any:
    from mlpipe_jupyter.store import Store

    return Store.open(create=create)


def _channel(spec: str) -> str:
    from mlpipe_jupyter.model.notify import parse_spec

    parsed, _ = parse_spec(spec)
    return parsed.channel if parsed else "(invalid) " + spec.split(":", 1)[0]


def print_targets(targets: list[Any], indent: str = "  ") -> None:
    """Notification targets as ``mlpipe show``-style lines (credentials stripped)."""
    for target in targets:
        print(f"{indent}notify:     {_channel(target.spec)} on {','.join(target.on)} "
              f"(id {target.id})")


def _raise_issues(issues: list[Any]) -> None:
    from mlpipe_jupyter.errors import error_for_issues

    if issues:
        raise error_for_issues(issues)


def cmd_notify(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.model.notify import parse_on
    from mlpipe_jupyter.store.notify import WORKSPACE
    from mlpipe_jupyter.validation import notify_issues

    action = args.notify_command
    if action == "default" and args.default_command == "add":
        _raise_issues(notify_issues(args.spec, args.on))
        store = _store(create=True)
        for spec in args.spec:
            target = store.notify.add_target(WORKSPACE, "", spec, parse_on(args.on)[0])
            print(f"workspace default: {_channel(spec)} on {','.join(target.on)} (id {target.id})")
        return 0
    store = _store()
    if action == "default" and args.default_command == "remove":
        from mlpipe_jupyter.errors import NotFoundError

        targets = store.notify.targets(WORKSPACE, "")
        found = [t for t in targets if str(t.id) == args.target or t.spec == args.target]
        if not found:
            raise NotFoundError(f"no workspace default {args.target!r} (ids: "
                                f"{', '.join(str(t.id) for t in targets) or 'none'})")
        for target in found:
            store.notify.remove_target(target.id)
            print(f"removed workspace default {_channel(target.spec)}")
        return 0
    if action == "remove":
        from mlpipe_jupyter.errors import NotFoundError

        found = [t for t in store.notify.targets() if t.id == args.id]
        if not found:
            raise NotFoundError(f"no notification target with id {args.id} (mlpipe notify list)")
        store.notify.remove_target(args.id)
        print(f"removed {found[0].source} target {_channel(found[0].spec)}")
        return 0
    scope = WORKSPACE if action == "default" else None
    targets = store.notify.targets(scope)
    if not targets:
        print("no notification targets (mlpipe notify default add SPEC; --notify on run, "
              "publish, schedule create)")
        return 0
    print(_table([[str(t.id), t.source, _channel(t.spec), ",".join(t.on)] for t in targets],
                 ["ID", "FROM", "CHANNEL", "ON"]))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.errors import DefinitionIssue
    from mlpipe_jupyter.model.notify import SETTINGS, setting_issues

    action = args.config_command
    if action in ("set", "get", "unset"):
        value = args.value if action == "set" else None
        _raise_issues([DefinitionIssue(p) for p in setting_issues(args.key, value)])
    if action == "set":
        _store(create=True).settings.set(args.key, args.value)
        print(f"{args.key} = {args.value}")
        return 0
    store = _store()
    if action == "unset":
        store.settings.unset(args.key)
        print(f"{args.key} unset")
        return 0
    if action == "get":
        value = store.settings.get(args.key)
        print(value if value is not None else f"({args.key} is not set)")
        return 0 if value is not None else 1
    values = store.settings.all()
    print(_table([[key, values.get(key, "-"), description]
                  for key, (description, _) in SETTINGS.items()], ["KEY", "VALUE", "WHAT"]))
    return 0


def add_parsers(sub: Any) -> None:
    notify = sub.add_parser("notify", help="where runs notify when they end")
    nsub = notify.add_subparsers(dest="notify_command", metavar="ACTION")
    nsub.required = True
    default = nsub.add_parser("default", help="the workspace default: every run notifies it")
    dsub = default.add_subparsers(dest="default_command", metavar="ACTION")
    dsub.required = True
    add = dsub.add_parser("add", help="add (or change the statuses of) a default target")
    add.add_argument("spec", nargs="+", help=SPEC_HELP)
    add.add_argument("--on", action="append", default=[], metavar="STATUSES", help=ON_HELP)
    dsub.add_parser("list", help="the workspace default targets")
    remove = dsub.add_parser("remove", help="remove a default target")
    remove.add_argument("target", help="its id (mlpipe notify default list) or its spec")
    nsub.add_parser("list", help="every target: workspace default, published, schedules")
    nremove = nsub.add_parser("remove", help="remove any target by id")
    nremove.add_argument("id", type=int)
    notify.set_defaults(func=cmd_notify)

    config = sub.add_parser("config", help="workspace settings (SMTP, server URL, retries)")
    csub = config.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    cset = csub.add_parser("set", help="set KEY to VALUE")
    cset.add_argument("key")
    cset.add_argument("value")
    csub.add_parser("get", help="print KEY's value").add_argument("key")
    csub.add_parser("unset", help="back to the default").add_argument("key")
    csub.add_parser("list", help="every setting, its value and what it does")
    config.set_defaults(func=cmd_config)
