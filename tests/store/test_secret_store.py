"""The secret store (store/secrets.py) and ``mlpipe secret set/list/delete`` through the
real CLI: values from stdin, never on the command line or in the workspace; the owner-only
file fallback; the keyring path with keyrings.alt's plaintext backend; references to an
environment variable or a file; ``MLPIPE_SECRET_<NAME>`` wins."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlpipe_jupyter.errors import EXIT_USAGE, SecretError, exit_code
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.secrets import SecretStore, override_variable, real_keyring
from tests.conftest import run_cli

VALUE = "pa55-Wd7-from-stdin-3e1"


@pytest.fixture(autouse=True)
def own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("MLPIPE_KEYRING", "0")
    return config


def _set(name: str, value: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlpipe_jupyter", "secret", "set", name, *extra],
                          input=value, capture_output=True, text=True, check=False,
                          env=dict(os.environ))


def test_secret_set_list_delete_through_the_cli(workspace_dir: Path, own_config: Path) -> None:
    done = _set("db.password", VALUE + "\n")
    assert done.returncode == 0, done.stderr
    assert VALUE not in done.stdout + done.stderr
    assert _set("api-key", "", "--from-env", "API_KEY").returncode == 0
    assert _set("tls", "", "--from-file", "/run/secrets/tls").returncode == 0

    listed = run_cli("secret", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SET", "VALUE", "IN"]
    assert [line.split()[0] for line in lines[1:]] == ["api-key", "db.password", "tls"]
    assert "environment variable API_KEY" in listed.stdout and "file /run/secrets/tls" in listed.stdout
    assert VALUE not in listed.stdout

    store = Store.open()
    assert SecretStore(store.workspace).resolve("db.password") == VALUE  # one newline dropped
    # the value is outside the project and the workspace, in a 0600 file in a 0700 folder
    for path in workspace_dir.rglob("*"):
        if path.is_file():
            assert VALUE.encode() not in path.read_bytes(), path
    files = [p for p in own_config.rglob("*") if p.is_file()]
    assert any(VALUE.encode() in p.read_bytes() for p in files)
    for path in files:
        if path.name != "workspace":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    folder = SecretStore(store.workspace).folder
    assert folder is not None and stat.S_IMODE(folder.stat().st_mode) == 0o700

    assert run_cli("secret", "delete", "db.password").returncode == 0
    assert "db.password" not in run_cli("secret", "list").stdout
    assert not any(VALUE.encode() in p.read_bytes() for p in own_config.rglob("*") if p.is_file())
    missing = run_cli("secret", "delete", "db.password")
    assert missing.returncode == EXIT_USAGE and "no secret 'db.password'" in missing.stderr
    store.close()


def test_the_value_is_never_taken_from_the_command_line(workspace_dir: Path) -> None:
    refused = run_cli("secret", "set", "x", VALUE)
    assert refused.returncode == EXIT_USAGE  # argparse: no such argument
    bad = _set("no/slash", "v")
    assert bad.returncode == EXIT_USAGE and "secret name 'no/slash' is not valid" in bad.stderr


def test_references_and_the_override_variable(store: Store, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = SecretStore(store.workspace)
    secrets.set_reference("from-env", env="SOME_VAR")
    mounted = tmp_path / "run-secrets" / "tls"
    mounted.parent.mkdir()
    secrets.set_reference("from.file", path=str(mounted))
    with pytest.raises(SecretError) as raised:
        secrets.resolve("from-env")
    message = str(raised.value)
    assert "'from-env'" in message and "MLPIPE_SECRET_FROM_ENV" in message
    assert "environment variable SOME_VAR" in message
    assert exit_code(raised.value) == EXIT_USAGE
    monkeypatch.setenv("SOME_VAR", "v1")
    assert secrets.resolve("from-env") == "v1"
    mounted.write_text("v2\n")
    assert secrets.resolve("from.file") == "v2"
    # the override wins over whatever is registered
    assert override_variable("from.file") == "MLPIPE_SECRET_FROM_FILE"
    monkeypatch.setenv("MLPIPE_SECRET_FROM_FILE", "v3")
    assert secrets.resolve("from.file") == "v3"
    # and needs no registration at all (how other code's tests provide secrets)
    monkeypatch.setenv("MLPIPE_SECRET_WEBHOOK_HMAC", "k")
    assert SecretStore(store.workspace).resolve("webhook-hmac") == "k"
    with pytest.raises(SecretError, match="'nothing'.*MLPIPE_SECRET_NOTHING.*mlpipe secret set"):
        secrets.resolve("nothing")


def test_values_go_to_a_keyring_backend_when_there_is_one(store: Store, tmp_path: Path) -> None:
    PlaintextKeyring = pytest.importorskip("keyrings.alt.file").PlaintextKeyring

    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring.cfg")  # type: ignore[misc]
    # keyrings.alt's file backends are no OS keyring: by default the owner-only file is used
    assert real_keyring() is None
    secrets = SecretStore(store.workspace, keyring_backend=backend)
    entry = secrets.set_value("db.password", VALUE)
    assert entry.source == "keyring" and secrets.entry("db.password") is not None
    assert backend.get_password(secrets.service, "db.password") == VALUE
    assert secrets.resolve("db.password") == VALUE
    folder = secrets.folder
    assert folder is not None
    assert not any(VALUE.encode() in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    secrets.delete("db.password")
    assert backend.get_password(secrets.service, "db.password") is None
