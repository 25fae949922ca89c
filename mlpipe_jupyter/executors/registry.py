"""Compute targets by name, found through the ``mlpipe_jupyter.executors`` entry points."""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache
from typing import Any

from mlpipe_jupyter.errors import ExecutorError
from mlpipe_jupyter.executors.base import Executor

ENTRY_POINT_GROUP = "mlpipe_jupyter.executors"
DEFAULT_COMPUTE = "local"

# Built in, so that a source checkout without an installed entry point still runs locally.
# A plugin's entry point adds a name; it cannot replace one of these, which are therefore
# resolved without scanning the installed distributions' entry points (~25-35 ms, paid by
# every run otherwise).
_BUILTIN = {
    "local": "mlpipe_jupyter.executors.local:LocalExecutor",
    "docker": "mlpipe_jupyter.executors.docker.executor:DockerExecutor",
    "dask": "mlpipe_jupyter.executors.dask.executor:DaskExecutor",
}


@lru_cache(maxsize=1)
def known_executors() -> dict[str, str]:
    """Executor names with the ``module:Class`` that implements them (scanned once: ~25 ms)."""
    from importlib.metadata import entry_points  # ~20 ms to import: only when needed

    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **_BUILTIN}


def _implementation(kind: str) -> str | None:
    """``module:Class`` of an executor kind, or None when no executor has that name."""
    return _BUILTIN.get(kind) or known_executors().get(kind)


def executor_class_name(name: str) -> str:
    """The scheme of a compute name: ``dask://host:port`` is the ``dask`` executor."""
    return name.split("://", 1)[0]


def check_compute_name(name: str, named: Collection[str] = ()) -> str | None:
    """The problem with a compute target name, or None. ``named``: the workspace's stored
    targets (``mlpipe compute add``), known by their names."""
    if name in named or _implementation(executor_class_name(name)) is not None:
        return None
    extra = f"; named targets: {', '.join(sorted(named))}" if named else ""
    return f"unknown compute target {name!r} (known: {', '.join(sorted(known_executors()))}{extra})"


def create_executor(name: str, **options: Any) -> Executor:
    """The executor for a compute name: an executor name, ``scheme://...``, or a target
    stored in the workspace given as ``workspace=`` (which brings its address and datastore)."""
    kind = executor_class_name(name)
    workspace = options.get("workspace")
    if _implementation(kind) is None and workspace is not None and "://" not in name:
        from mlpipe_jupyter.store.compute import ComputeTargets

        targets = ComputeTargets(workspace)
        if name in targets.names():
            target = targets.get(name)
            kind = target.kind
            options = {**options, "address": target.address, "datastore": target.datastore}
    implementation = _implementation(kind)
    if implementation is None:
        raise ExecutorError(f"unknown compute target {name!r} "
                            f"(known: {', '.join(sorted(known_executors()))})")
    module_name, _, class_name = implementation.partition(":")
    import importlib

    cls = getattr(importlib.import_module(module_name), class_name)
    executor: Executor = cls(target=name, **options)
    return executor
