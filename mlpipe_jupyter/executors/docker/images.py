"""Images for environments: built once from the spec, tagged by its content hash."""

from __future__ import annotations

import fcntl
import io
import shlex
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import ExecutorError
from mlpipe_jupyter.executors.docker.bootstrap import base_image_tag, cache_dir
from mlpipe_jupyter.model.fingerprint import hash_text
from mlpipe_jupyter.store.environments import EnvironmentVersion

ENV_REPOSITORY = "mlpipe/env"
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")


def env_image_tag(env: EnvironmentVersion) -> str:
    return f"{ENV_REPOSITORY}-{env.name}:{env.spec.content_hash}"


def container_fingerprint(env: EnvironmentVersion) -> str:
    """What identifies an environment wherever its image is built: its definition (the
    content hash) and its base image. Builds of unpinned packages on different hosts may
    differ; pinning versions makes the identity exact."""
    return f"env:{env.spec.content_hash}@{env.spec.image or base_image_tag()}"


def dockerfile(env: EnvironmentVersion, base: str) -> str:
    """The Dockerfile of an environment. Builds use the host network; steps never do."""
    lines = [f"FROM {base}", "USER root"]
    if EXTRA_CA_DIR.is_dir() and any(EXTRA_CA_DIR.iterdir()):
        # this network intercepts TLS: package installs need the host's extra CAs
        lines += ["COPY extra-ca/ /usr/local/share/ca-certificates/",
                  "RUN (update-ca-certificates >/dev/null 2>&1 || true)"]
    if env.spec.apt:
        packages = " ".join(shlex.quote(p) for p in env.spec.apt)
        lines.append(
            "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            f"--no-install-recommends {packages} && rm -rf /var/lib/apt/lists/*"
        )
    pip = "PIP_CERT=/etc/ssl/certs/ca-certificates.crt python3 -m pip install --no-cache-dir --disable-pip-version-check"
    if env.spec.pip:
        lines.append(f"RUN {pip} {' '.join(shlex.quote(p) for p in env.spec.pip)}")
    # every step runs under papermill with an ipykernel, and hands variables over with
    # cloudpickle (handover.py): add them where the image lacks them
    lines.append('RUN python3 -c "import papermill, ipykernel, cloudpickle" 2>/dev/null || '
                 f'{pip} papermill ipykernel cloudpickle')
    lines.append(f"LABEL org.mlpipe.env={env.name} org.mlpipe.env-version={env.version}")
    return "\n".join(lines) + "\n"


def _context(text: str) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        if EXTRA_CA_DIR.is_dir():
            for cert in sorted(EXTRA_CA_DIR.glob("*.crt")):
                tar.add(str(cert), arcname=f"extra-ca/{cert.name}")
    buffer.seek(0)
    return buffer


def build_log_path(env: EnvironmentVersion) -> Path:
    """Where a build outside a workspace (on a Dask worker) writes its log."""
    return cache_dir().parent / "builds" / f"{env.name}-v{env.version}-{env.spec.content_hash}.log"


@contextmanager
def _build_lock(tag: str) -> Iterator[None]:
    """One build of a tag at a time on this host: runners and Dask workers that share an
    engine wait for the first build instead of repeating it."""
    folder = Path(tempfile.gettempdir()) / "mlpipe-image-locks"
    folder.mkdir(exist_ok=True)
    with (folder / f"{hash_text(tag)[:16]}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_env_image(
    client: Any, env: EnvironmentVersion, log_path: Path, log: Callable[[str], None] = print
) -> str:
    """The id of the environment's image, building it (with logs) if it is not there."""
    import docker.errors

    tag = env_image_tag(env)
    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        pass
    with _build_lock(tag):
        try:  # built by someone else while we waited
            return str(client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            return _build(client, env, tag, log_path, log)


def _build(client: Any, env: EnvironmentVersion, tag: str, log_path: Path,
           log: Callable[[str], None]) -> str:
    import docker.errors

    base = env.spec.image or base_image_tag()
    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        hint = ("run `mlpipe image bootstrap` to build it" if env.spec.image is None else
                "images cannot be pulled here: `docker load` it, or omit --image to use "
                "mlpipe's base image (`mlpipe image bootstrap`)")
        raise ExecutorError(
            f"environment {env.ref}: base image {base!r} is not in the Docker engine; {hint}"
        ) from None
    log(f"building image {tag} for environment {env.ref} (log: {log_path})")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    error: str | None = None
    with log_path.open("w", encoding="utf-8") as out:
        stream = client.api.build(
            fileobj=_context(dockerfile(env, base)), custom_context=True, tag=tag, rm=True,
            forcerm=True, pull=False, network_mode="host", decode=True,
        )
        for chunk in stream:
            if "stream" in chunk:
                out.write(chunk["stream"])
                out.flush()
            if "error" in chunk:
                error = chunk["error"].strip()
                out.write(error + "\n")
    if error:
        tail = "\n".join(log_path.read_text().strip().splitlines()[-12:])
        raise ExecutorError(
            f"building environment {env.ref} failed: {error}\n{tail}\nfull log: {log_path}"
        )
    image = client.images.get(tag)
    log(f"built {tag} in {time.time() - started:.0f}s")
    return str(image.id)
