"""``mlpipe compute add/list/show/remove``: named compute targets of the workspace.

Its own module so the compute commands stay out of the way of the main parser; it parses,
calls the store and the dask probe, and prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mlpipe_jupyter.reports import table as _table
from mlpipe_jupyter.reports import when as _when

PROBE_TIMEOUT = 2.0


def add_compute_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """Add ``compute`` and its actions to the ``mlpipe`` sub-parsers."""
    compute = sub.add_parser("compute", help="named compute targets (Dask clusters)")
    csub = compute.add_subparsers(dest="compute_command", metavar="ACTION")
    csub.required = True
    add = csub.add_parser("add", help="name a Dask cluster: steps then use --compute NAME")
    add.add_argument("name")
    add.add_argument("--dask", required=True, metavar="ADDRESS",
                     help="the scheduler: tcp://HOST:PORT (or dask://HOST:PORT)")
    add.add_argument("--datastore", default="shared",
                     help="how workers reach the workspace's data: shared (default: the "
                          "same paths on every node), or a datastore from `mlpipe datastore "
                          "add` (object storage)")
    add.add_argument("--replace", action="store_true", help="change an existing target")
    csub.add_parser("list", help="the targets, and whether each is reachable")
    show = csub.add_parser("show", help="a target with its workers and their resources")
    show.add_argument("name")
    remove = csub.add_parser("remove", help="forget a target")
    remove.add_argument("name")
    compute.set_defaults(func=func)


def _store(create: bool = False) -> Any:
    from mlpipe_jupyter.store import Store

    return Store.open(create=create)


def _resources(resources: dict[str, float]) -> str:
    return " ".join(f"{k}={v:g}" for k, v in sorted(resources.items())) or "-"


def run_compute_command(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.executors.dask.cluster import probe, scheduler_address
    from mlpipe_jupyter.store.compute import ComputeTargets

    if args.compute_command == "add":
        targets = ComputeTargets(_store(create=True).workspace)
        target = targets.add(args.name, "dask", scheduler_address(args.dask), args.datastore,
                             replace=args.replace)
        info = probe(target.address, PROBE_TIMEOUT)
        print(f"added compute target {target.name}: dask scheduler {target.address}, "
              f"datastore {target.datastore} ({info.summary()})")
        print(f"use it with `mlpipe run NOTEBOOK --compute {target.name}` or "
              f"`%%mlstep ... --compute {target.name}`")
        return 0
    targets = ComputeTargets(_store().workspace)
    if args.compute_command == "remove":
        targets.remove(args.name)
        print(f"removed compute target {args.name}")
        return 0
    if args.compute_command == "list":
        rows = [["local", "built in", "this machine", "-", "reachable"],
                ["docker", "built in", "containers on this machine", "-", "-"]]
        for target in targets.all():
            info = probe(target.address, PROBE_TIMEOUT)
            rows.append([target.name, target.kind, target.address, target.datastore,
                         info.summary()])
        print(_table(rows, ["NAME", "KIND", "WHERE", "DATASTORE", "STATUS"]))
        print("\nany Dask scheduler also works directly: --compute dask://HOST:PORT")
        return 0
    target = targets.get(args.name)
    info = probe(target.address, PROBE_TIMEOUT, engines=True)
    print(f"compute target {target.name}")
    print(f"  kind:      {target.kind}")
    print(f"  scheduler: {target.address}")
    print(f"  datastore: {target.datastore}")
    print(f"  added:     {_when(target.created_at)}")
    print(f"  status:    {info.summary()}")
    if info.workers:
        rows = [[str(w.get("name")), addr, str(w.get("nthreads")),
                 f"{int(w['memory_limit']) / 2**30:.1f} GiB" if w.get("memory_limit") else "-",
                 _resources(w.get("resources") or {}), "no" if w.get("docker") else "yes"]
                for addr, w in sorted(info.workers.items())]
        print()
        print(_table(rows, ["WORKER", "ADDRESS", "THREADS", "MEMORY", "RESOURCES", "DOCKER"]))
        for _, w in sorted(info.workers.items()):
            if w.get("docker"):
                print(f"  {w.get('name')}: {w['docker']} (its steps cannot use --env)")
    return 0 if info.reachable else 1


def add_datastore_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """Add ``datastore`` and its actions to the ``mlpipe`` sub-parsers."""
    datastore = sub.add_parser("datastore", help="object storage that Dask workers reach")
    dsub = datastore.add_subparsers(dest="datastore_command", metavar="ACTION")
    dsub.required = True
    add = dsub.add_parser("add", help="name an fsspec URL (credentials come from the "
                                      "environment and config files, never from here)")
    add.add_argument("name")
    add.add_argument("url", help="e.g. s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, abfs://CONTAINER/PREFIX")
    add.add_argument("--replace", action="store_true", help="change an existing datastore")
    dsub.add_parser("list", help="the datastores")
    show = dsub.add_parser("show", help="one datastore")
    show.add_argument("name")
    remove = dsub.add_parser("remove", help="forget a datastore (its objects stay)")
    remove.add_argument("name")
    datastore.set_defaults(func=func)


def run_datastore_command(args: argparse.Namespace) -> int:
    from mlpipe_jupyter.store.datastores import Datastores

    if args.datastore_command == "add":
        stores = Datastores(_store(create=True).workspace)
        store = stores.add(args.name, args.url, replace=args.replace)
        print(f"added datastore {store.name}: {store.url}")
        print(f"use it with `mlpipe compute add NAME --dask tcp://HOST:PORT "
              f"--datastore {store.name}`")
        return 0
    stores = Datastores(_store().workspace)
    if args.datastore_command == "remove":
        stores.remove(args.name)
        print(f"removed datastore {args.name}")
        return 0
    if args.datastore_command == "list":
        rows = [[s.name, s.url, _when(s.created_at)] for s in stores.all()]
        print(_table(rows, ["NAME", "URL", "ADDED"]))
        return 0
    store = stores.get(args.name)
    print(f"datastore {store.name}")
    print(f"  url:   {store.url}")
    print(f"  added: {_when(store.created_at)}")
    return 0
