"""STAND-IN for the secret store being written on branch ``secrets``: drop at merge.

Only what notifications need: ``SecretStore(workspace).resolve(name)`` reads the
environment variable ``MLPIPE_SECRET_<NAME>`` (NAME upper-cased, every character that is
not a letter or a digit as ``_``), which the real module supports too.
"""

from __future__ import annotations

import os
import re

from mlpipe_jupyter.errors import MlpipeError
from mlpipe_jupyter.store.workspace import Workspace


def _variable(name: str) -> str:
    return "MLPIPE_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class SecretStore:
    """Secrets by name (stand-in: environment variables only)."""

    def __init__(self, workspace: Workspace | None) -> None:
        self.workspace = workspace

    def resolve(self, name: str) -> str:
        value = os.environ.get(_variable(name))
        if value is None:
            raise MlpipeError(f"secret {name!r} is not set (environment variable {_variable(name)})")
        return value
