"""Talking to the Docker engine: one client, and errors that say what to do."""

from __future__ import annotations

import os
from typing import Any

from mlpipe_jupyter.errors import ExecutorError, TargetUnavailableError

START_HINT = (
    "start one with `bash scripts/install-docker` (as root: installs docker.io and runs "
    "`dockerd --bridge=none --iptables=false`), or set DOCKER_HOST"
)


def docker_client() -> Any:
    """A connected docker-py client, or ExecutorError saying how to get an engine."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:  # the docker package is a core dependency; be clear anyway
        raise ExecutorError(f"the docker Python package is missing: {exc}") from None
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as exc:
        raise TargetUnavailableError(
            f"no Docker engine answers ({_first_line(exc)}); {START_HINT}") from None
    return client


def docker_engine_problem() -> str | None:
    """None when a Docker engine answers here, else why not (asked of Dask workers)."""
    try:
        docker_client().close()
    except ExecutorError:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return f"no Docker engine answers at {where}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
