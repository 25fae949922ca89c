"""Images steps run in, built once and reused: an environment's (``--env``), tagged by its
spec's content hash, and a step's own image (``--image``) with papermill, ipykernel and
cloudpickle added, tagged by that image's id. One Dockerfile writer, one builder."""

from __future__ import annotations

import fcntl
import io
import json
import shlex
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import ExecutorError
from mlpipe_jupyter.executors.docker.bootstrap import base_image_tag, cache_dir
from mlpipe_jupyter.model.fingerprint import hash_text
from mlpipe_jupyter.store.environments import EnvironmentVersion

ENV_REPOSITORY = "mlpipe/env"
STEP_IMAGE_REPOSITORY = "mlpipe/image"  # steps' own images (--image), with papermill added
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")


def env_image_tag(env: EnvironmentVersion) -> str:
    """The image of an environment: its definition and what it is built on (a new base image,
    which mlpipe's runtime needs, such as cloudpickle, makes a new image)."""
    base = hash_text(env.spec.image or base_image_tag())[:8]
    return f"{ENV_REPOSITORY}-{env.name}:{env.spec.content_hash}-{base}"


def container_fingerprint(env: EnvironmentVersion) -> str:
    """What identifies an environment wherever its image is built: its definition (the
    content hash) and its base image. Builds of unpinned packages on different hosts may
    differ; pinning versions makes the identity exact."""
    return f"env:{env.spec.content_hash}@{env.spec.image or base_image_tag()}"


def dockerfile(env: EnvironmentVersion, base: str) -> str:
    """The Dockerfile of an environment. Builds use the host network; steps never do."""
    return _dockerfile(base, apt=env.spec.apt, pip=env.spec.pip,
                       labels=f"org.mlpipe.env={env.name} org.mlpipe.env-version={env.version}")


def step_image_dockerfile(image: str, image_id: str) -> str:
    """The Dockerfile of a step's own image (``--image``): that image (by id) with papermill,
    ipykernel and cloudpickle where it lacks them. The runner gives every container its full command
    (as Kubernetes' ``command`` does for Kale steps), so the image's entrypoint is reset;
    containers get an init process from the engine."""
    return _dockerfile(image_id, labels=f"org.mlpipe.image={json.dumps(image)}",
                       extra=("ENTRYPOINT []",))


def _dockerfile(base: str, apt: Sequence[str] = (), pip: Sequence[str] = (), labels: str = "",
                extra: Sequence[str] = ()) -> str:
    lines = [f"FROM {base}", "USER root"]
    if EXTRA_CA_DIR.is_dir() and any(EXTRA_CA_DIR.iterdir()):
        # this network intercepts TLS: package installs need the host's extra CAs
        lines += ["COPY extra-ca/ /usr/local/share/ca-certificates/",
                  "RUN (update-ca-certificates >/dev/null 2>&1 || true)"]
    if apt:
        packages = " ".join(shlex.quote(p) for p in apt)
        lines.append(
            "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            f"--no-install-recommends {packages} && rm -rf /var/lib/apt/lists/*"
        )
    pip_install = ("PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_BREAK_SYSTEM_PACKAGES=1 "
                   "python3 -m pip install --no-cache-dir --disable-pip-version-check")
    if pip:
        lines.append(f"RUN {pip_install} {' '.join(shlex.quote(p) for p in pip)}")
    # every step runs under papermill with an ipykernel, and hands variables over with
    # cloudpickle (handover.py): add them where the image lacks them
    lines.append('RUN python3 -c "import papermill, ipykernel, cloudpickle" 2>/dev/null || '
                 f'{pip_install} papermill ipykernel cloudpickle')
    lines += extra
    if labels:
        lines.append(f"LABEL {labels}")
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

    def build() -> str:
        base = env.spec.image or base_image_tag()
        if _local_id(client, base) is None:
            hint = ("run `mlpipe image bootstrap` to build it" if env.spec.image is None else
                    "images cannot be pulled here: `docker load` it, or omit --image to use "
                    "mlpipe's base image (`mlpipe image bootstrap`)")
            raise ExecutorError(
                f"environment {env.ref}: base image {base!r} is not in the Docker engine; {hint}")
        return _build(client, dockerfile(env, base), tag, f"environment {env.ref}", log_path, log)

    tag = env_image_tag(env)
    return _ensure(client, tag, build)


def step_image_tag(image_id: str) -> str:
    """The derived image of a step image, tagged by the id of the image it derives from."""
    return f"{STEP_IMAGE_REPOSITORY}:{image_id.split(':')[-1][:32]}"


def ensure_step_image(client: Any, image: str, log_dir: Path,
                      log: Callable[[str], None] = print) -> str:
    """The id of the image a step naming ``--image IMAGE`` runs in: IMAGE with papermill,
    ipykernel and cloudpickle, built once per IMAGE id (a rebuilt or re-tagged IMAGE gets a new one).
    IMAGE must be in the engine (a pull is tried; registries are often unreachable)."""
    image_id = _local_id(client, image) or _pull(client, image)
    tag = step_image_tag(image_id)
    log_path = log_dir / f"image-{tag.rsplit(':', 1)[-1]}.build.log"
    what = f"image {image}"
    return _ensure(client, tag, lambda: _build(
        client, step_image_dockerfile(image, image_id), tag, what, log_path, log,
        hint="the image needs python3 with pip, or papermill, ipykernel and cloudpickle installed"))


def _local_id(client: Any, image: str) -> str | None:
    import docker.errors

    try:
        return str(client.images.get(image).id)
    except docker.errors.ImageNotFound:
        return None


def _pull(client: Any, image: str) -> str:
    """Pull ``image`` (its id), or ExecutorError saying how to get it onto this machine."""
    import docker.errors

    try:
        return str(client.images.pull(image).id)
    except docker.errors.APIError as exc:  # NotFound is one
        reason = (str(exc.explanation or exc).strip().splitlines() or [type(exc).__name__])[0]
    raise ExecutorError(
        f"image {image!r} is not in the Docker engine and could not be pulled ({reason}); get "
        f"it onto this machine with `docker pull {image}` where a registry is reachable, or "
        "`docker save` it elsewhere and `docker load -i FILE` here; or run the step in an "
        "environment (`mlpipe env create NAME --image BASE --pip ...`, then --env NAME)")


def _ensure(client: Any, tag: str, build: Callable[[], str]) -> str:
    """The id of the image ``tag``; ``build()`` makes it when absent (once per host)."""
    found = _local_id(client, tag)
    if found is not None:
        return found
    with _build_lock(tag):
        found = _local_id(client, tag)  # built by someone else while we waited
        return found if found is not None else build()


def _build(client: Any, text: str, tag: str, what: str, log_path: Path,
           log: Callable[[str], None], hint: str = "") -> str:
    log(f"building image {tag} for {what} (log: {log_path})")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    error: str | None = None
    with log_path.open("w", encoding="utf-8") as out:
        stream = client.api.build(
            fileobj=_context(text), custom_context=True, tag=tag, rm=True,
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
        hint = f" ({hint})" if hint else ""
        raise ExecutorError(f"building {what} failed{hint}: {error}\n{tail}\nfull log: {log_path}")
    image = client.images.get(tag)
    log(f"built {tag} in {time.time() - started:.0f}s")
    return str(image.id)
