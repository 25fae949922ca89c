"""A real Docker engine and the runner base image, made ready once per test session."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def docker_engine() -> Any:
    """The engine's client, with the base image present (built or loaded from the cache)."""
    from mlpipe_jupyter.executors.docker.bootstrap import bootstrap_base_image
    from mlpipe_jupyter.executors.docker.engine import docker_client

    subprocess.run(["bash", str(REPO / "scripts" / "install-docker")], check=True)
    client = docker_client()
    bootstrap_base_image(client)
    return client
