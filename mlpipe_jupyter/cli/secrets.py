"""``mlpipe secret set/list/delete``: the workspace's secrets (docs/secrets.md).

A value is read from a hidden prompt (getpass) when stdin is a terminal, else from stdin;
never from the command line, where it would land in the shell's history and in ``ps``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mlpipe_jupyter.reports import table as _table
from mlpipe_jupyter.reports import when as _when


def add_secret_parser(sub: Any) -> None:
    """Add ``secret`` and its actions to the ``mlpipe`` sub-parsers."""
    secret = sub.add_parser("secret", help="secrets steps receive as environment variables")
    ssub = secret.add_subparsers(dest="secret_command", metavar="ACTION")
    ssub.required = True
    put = ssub.add_parser("set", help="store a secret (the value from a hidden prompt or "
                                      "stdin), or register where it is")
    put.add_argument("name")
    source = put.add_mutually_exclusive_group()
    source.add_argument("--from-env", metavar="VAR",
                        help="the value is environment variable VAR where the step resolves it")
    source.add_argument("--from-file", metavar="PATH",
                        help="the value is the content of PATH where the step resolves it "
                             "(e.g. /run/secrets/NAME)")
    ssub.add_parser("list", help="the secrets' names, when each was set and where its value "
                                 "is (never the values)")
    delete = ssub.add_parser("delete", help="remove a secret")
    delete.add_argument("name")
    secret.set_defaults(func=run_secret_command)


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"value of secret {name}: ")
    value = sys.stdin.read()
    return value[:-1] if value.endswith("\n") else value  # `echo x |` adds one newline


def run_secret_command(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.store import Store
    from mlpipe_jupyter.store.secrets import SecretStore

    store = SecretStore(Store.open(create=args.secret_command == "set").workspace)
    if args.secret_command == "set":
        if args.from_env or args.from_file:
            entry = store.set_reference(args.name, env=args.from_env, path=args.from_file)
        else:
            entry = store.set_value(args.name, _read_value(args.name))
        print(f"secret {entry.name}: {entry.describe()}")
        return 0
    if args.secret_command == "delete":
        store.delete(args.name)
        print(f"secret {args.name} deleted")
        return 0
    entries = store.entries()
    if not entries:
        print("no secrets (mlpipe secret set NAME)")
        return 0
    print(_table([[e.name, _when(e.set_at), e.describe()] for e in entries],
                 ["NAME", "SET", "VALUE IN"]))
    return 0
