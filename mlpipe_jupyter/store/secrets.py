"""Secrets by reference: a step names a secret, the machine that runs it resolves the value.

Where a secret's value comes from, in the order ``SecretStore.resolve`` looks:

1. the environment variable ``MLPIPE_SECRET_<NAME>`` of the resolving process (NAME
   upper-cased, every character other than a letter or digit as ``_``): it wins over
   anything registered (CI, a Dask worker's environment, tests);
2. what ``mlpipe secret set`` registered for the workspace: a reference to an environment
   variable (``--from-env VAR``) or a file (``--from-file PATH``, e.g. ``/run/secrets/db``),
   or a value kept in the OS keyring (through the ``keyring`` library, when a real backend
   is available) or else in a file readable only by its owner.

Nothing of this lives in the workspace or the project folder: the registry of names (when
each was set, and where its value is) and the fallback file of values are in
``$XDG_CONFIG_HOME/mlpipe/secrets/<workspace id>/`` (default ``~/.config/mlpipe/...``), a
0700 folder with 0600 files; the workspace id is a hash of the workspace's real path.
Values never appear in an error message: a ``SecretError`` names the secret and every
place looked.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import SecretError
from mlpipe_jupyter.model.grammar import check_secret_name
from mlpipe_jupyter.store.workspace import Workspace

ENV_PREFIX = "MLPIPE_SECRET_"
KEYRING_SERVICE_PREFIX = "mlpipe"
# Set to "0" to never use the OS keyring (values go to the owner-only file).
KEYRING_VARIABLE = "MLPIPE_KEYRING"

KEYRING = "keyring"
FILE = "file"
FROM_ENV = "env"
FROM_FILE = "path"


def override_variable(name: str) -> str:
    """``MLPIPE_SECRET_<NAME>``: the environment variable that overrides secret ``name``."""
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def config_home() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mlpipe"


def workspace_id(root: Path) -> str:
    """A stable id of a workspace: its real path, hashed."""
    return hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SecretEntry:
    """A registered secret: its name, when it was set, and where its value is (never the
    value): ``keyring``, ``file``, ``env`` (ref = variable) or ``path`` (ref = file)."""

    name: str
    set_at: float
    source: str
    ref: str | None = None

    def describe(self) -> str:
        if self.source == FROM_ENV:
            return f"environment variable {self.ref}"
        if self.source == FROM_FILE:
            return f"file {self.ref}"
        if self.source == KEYRING:
            return "OS keyring"
        return "owner-only file"


def real_keyring() -> Any | None:
    """The ``keyring`` backend when it is a real one (an OS keyring), else None: no
    ``keyring`` installed, its fail/null backend, or the plaintext/encrypted file backends of
    ``keyrings.alt`` (no better than our own owner-only file)."""
    if os.environ.get(KEYRING_VARIABLE, "1") in ("0", "off", "no", "false"):
        return None
    try:
        import keyring
    except Exception:
        return None
    backend = keyring.get_keyring()
    backends = getattr(backend, "backends", None)
    candidates = list(backends) if backends is not None else [backend]
    for candidate in candidates:
        module = type(candidate).__module__
        if not module.startswith(("keyring.backends.fail", "keyring.backends.null",
                                  "keyrings.alt", "keyring.backends.chainer")):
            return backend
    return None


class SecretStore:
    """A workspace's secrets. ``keyring_backend``: the ``keyring`` backend to keep values in
    (default: the OS keyring when there is one, else the owner-only file); ``False``
    forces the file."""

    def __init__(self, workspace: Workspace | Path | str | None,
                 keyring_backend: Any | None | bool = None) -> None:
        if isinstance(workspace, Workspace):
            root: Path | None = workspace.root
        elif workspace is not None:
            root = Path(workspace)
        else:
            root = None
        self.root = root
        self.folder = (config_home() / "secrets" / workspace_id(root)) if root else None
        # the OS keyring is looked up at first use: loading keyring's backends costs
        # ~0.2 s, and most stores (every run's validation makes one) never touch it
        self._chosen_keyring = keyring_backend

    @functools.cached_property
    def _keyring(self) -> Any | None:
        chosen = self._chosen_keyring
        if chosen is False:
            return None
        return real_keyring() if chosen is None or chosen is True else chosen

    # -- where things are --------------------------------------------------------------------
    @property
    def service(self) -> str:
        return f"{KEYRING_SERVICE_PREFIX}:{self.root.resolve() if self.root else '-'}"

    @property
    def uses_keyring(self) -> bool:
        return self._keyring is not None

    def _index_path(self) -> Path:
        assert self.folder is not None
        return self.folder / "index.json"

    def _values_path(self) -> Path:
        assert self.folder is not None
        return self.folder / "values.json"

    def _need_folder(self) -> Path:
        if self.folder is None:
            raise SecretError("secrets need a workspace (mlpipe init, or MLPIPE_HOME)")
        self.folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.folder.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        (self.folder / "workspace").write_text(f"{self.root}\n", encoding="utf-8")
        return self.folder

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise SecretError(f"cannot read {path}: {type(exc).__name__}") from None
        return data if isinstance(data, dict) else {}

    def _write(self, path: Path, data: Mapping[str, Any]) -> None:
        """Atomically, created 0600 (never readable by others, not even for a moment)."""
        self._need_folder()
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    # -- registering -------------------------------------------------------------------------
    def set_value(self, name: str, value: str) -> SecretEntry:
        """Keep ``value`` as secret ``name`` (the OS keyring, else the owner-only file)."""
        _check(name)
        if value == "":
            raise SecretError(f"secret {name!r}: the value is empty; nothing was stored")
        values = self._read(self._values_path()) if self.folder else {}
        if self._keyring is not None:
            self._keyring.set_password(self.service, name, value)
            source = KEYRING
            if name in values:
                values.pop(name)
                self._write(self._values_path(), values)
        else:
            values[name] = value
            self._write(self._values_path(), values)
            source = FILE
        return self._register(SecretEntry(name, time.time(), source))

    def set_reference(self, name: str, *, env: str | None = None,
                      path: str | None = None) -> SecretEntry:
        """Register secret ``name`` as the environment variable ``env`` or the file
        ``path`` of the machine that resolves it (read then, not now)."""
        _check(name)
        if (env is None) == (path is None):
            raise SecretError("give exactly one of --from-env VAR and --from-file PATH")
        self._forget_value(name)
        if env is not None:
            return self._register(SecretEntry(name, time.time(), FROM_ENV, env))
        return self._register(SecretEntry(name, time.time(), FROM_FILE,
                                          str(Path(str(path)).expanduser())))

    def _register(self, entry: SecretEntry) -> SecretEntry:
        index = self._read(self._index_path())
        index[entry.name] = {"set_at": entry.set_at, "source": entry.source, "ref": entry.ref}
        self._write(self._index_path(), index)
        return entry

    def _forget_value(self, name: str) -> None:
        if self.folder is None:
            return
        values = self._read(self._values_path())
        if name in values:
            values.pop(name)
            self._write(self._values_path(), values)
        entry = self.entry(name)
        if entry is not None and entry.source == KEYRING and self._keyring is not None:
            try:
                self._keyring.delete_password(self.service, name)
            except Exception:  # already gone from the keyring
                pass

    def delete(self, name: str) -> None:
        """Remove secret ``name`` (its registration and its stored value)."""
        _check(name)
        if self.entry(name) is None:
            raise SecretError(f"no secret {name!r} is registered for this workspace "
                              f"(mlpipe secret list shows them)")
        self._forget_value(name)
        index = self._read(self._index_path())
        index.pop(name, None)
        self._write(self._index_path(), index)

    def entries(self) -> list[SecretEntry]:
        """Every registered secret, by name (never a value)."""
        if self.folder is None:
            return []
        index = self._read(self._index_path())
        return [SecretEntry(name, float(item.get("set_at", 0)), str(item.get("source", FILE)),
                            item.get("ref"))
                for name, item in sorted(index.items())]

    def entry(self, name: str) -> SecretEntry | None:
        return next((e for e in self.entries() if e.name == name), None)

    # -- resolving ---------------------------------------------------------------------------
    def places(self, name: str) -> list[str]:
        """Where ``resolve`` looks for ``name``, in order, as a user reads them."""
        found = [f"environment variable {override_variable(name)}"]
        entry = self.entry(name)
        if entry is not None:
            found.append(f"registered: {entry.describe()}")
        elif self.folder is not None:
            found.append(f"not registered for workspace {self.root} "
                         f"(mlpipe secret set {name}; registry {self.folder})")
        else:
            found.append("no workspace, so no registered secrets")
        return found

    def lookup(self, name: str) -> str | None:
        """The value of ``name``, or None when no place has it."""
        override = os.environ.get(override_variable(name))
        if override is not None:
            return override
        entry = self.entry(name)
        if entry is None:
            return None
        if entry.source == FROM_ENV:
            return os.environ.get(str(entry.ref))
        if entry.source == FROM_FILE:
            try:
                return Path(str(entry.ref)).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError:
                return None
        if entry.source == KEYRING:
            backend = self._keyring or real_keyring()
            if backend is None:
                return None
            value = backend.get_password(self.service, name)
            return None if value is None else str(value)
        value = self._read(self._values_path()).get(name)
        return None if value is None else str(value)

    def resolve(self, name: str) -> str:
        """The value of secret ``name``; ``SecretError`` naming the secret and every place
        looked when there is none."""
        _check(name)
        value = self.lookup(name)
        if value is None:
            raise SecretError(missing_message(name, self.places(name)), name=name)
        return value

    def missing(self, names: Iterable[str]) -> dict[str, list[str]]:
        """The names no place has, each with the places looked."""
        return {name: self.places(name) for name in names if self.lookup(name) is None}

    def environment(self, pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
        """``{ENV_VAR: value}`` for (secret name, environment variable) pairs: what a
        step's kernel gets. One ``SecretError`` names every secret that is missing."""
        values: dict[str, str] = {}
        problems: list[str] = []
        for name, env in pairs:
            value = self.lookup(name)
            if value is None:
                problems.append(missing_message(name, self.places(name)))
            else:
                values[env] = value
        if problems:
            raise SecretError("; ".join(problems))
        return values


def missing_message(name: str, places: list[str]) -> str:
    return f"secret {name!r} not found; looked in: {'; '.join(places)}"


def _check(name: str) -> None:
    problem = check_secret_name(name)
    if problem:
        raise SecretError(problem)
