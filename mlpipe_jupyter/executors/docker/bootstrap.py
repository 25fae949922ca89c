"""``mlpipe image bootstrap``: a runner base image built with no registry at all.

Air-gapped machines (and our CI) cannot pull images. This builds a Debian bookworm root
file system with mmdebstrap from the Debian mirror, adds a venv with papermill and
ipykernel from PyPI, and imports it into the engine. The image is cached as a zstd'ed
``docker save`` keyed on the recipe, so a second bootstrap (or a fresh engine on the same
machine) loads it in seconds instead of building it again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from mlpipe_jupyter.errors import ExecutorError

BASE_REPOSITORY = "mlpipe/runner-base"
SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libstdc++6", "tini")
# cloudpickle: steps hand over functions and classes defined in the notebook (handover.py)
PYTHON_PACKAGES = ("papermill>=2.5,<3", "ipykernel>=6,<8", "cloudpickle>=3")
VENV = "/opt/venv"
RECIPE_VERSION = 1  # bump when the build steps below change
_CHROOT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def recipe_hash() -> str:
    recipe = repr((RECIPE_VERSION, SUITE, DEBIAN_PACKAGES, PYTHON_PACKAGES, VENV))
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def base_image_tag() -> str:
    """The tag of the base image this version of mlpipe builds and uses."""
    return f"{BASE_REPOSITORY}:{recipe_hash()}"


def cache_dir() -> Path:
    folder = os.environ.get("MLPIPE_IMAGE_CACHE")
    return Path(folder) if folder else Path.home() / ".cache" / "mlpipe" / "images"


def _run(command: list[str], log: Callable[[str], None], **kwargs: object) -> None:
    log("$ " + " ".join(command[:6]) + (" ..." if len(command) > 6 else ""))
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ExecutorError(f"{command[0]} failed (exit {done.returncode}):\n{tail}")


def _customize_hooks() -> list[str]:
    """mmdebstrap hooks: the host's extra CAs (this network intercepts TLS), a venv, the
    Python packages, and .pyc files that stay valid (mmdebstrap clamps every mtime)."""
    chroot_env = f'chroot "$1" env -i {_CHROOT_PATH} HOME=/root PIP_CERT=/etc/ssl/certs/ca-certificates.crt'
    packages = " ".join(f"'{p}'" for p in PYTHON_PACKAGES)
    return [
        'mkdir -p "$1/usr/local/share/ca-certificates" && '
        'cp -r /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/" || true',
        f"{chroot_env} update-ca-certificates",
        f"{chroot_env} python3 -m venv {VENV}",
        f"{chroot_env} {VENV}/bin/pip install --quiet --no-cache-dir --no-compile "
        f"--disable-pip-version-check {packages}",
        f"{chroot_env} {VENV}/bin/python -m compileall -q -f --invalidation-mode checked-hash "
        f"{VENV}/lib",
        'rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*',
    ]


def bootstrap_base_image(
    client: object, force: bool = False, log: Callable[[str], None] = print
) -> str:
    """Make sure the base image exists in the engine; returns its tag.

    Order: already in the engine → done; in the cache → ``docker load``; else build it
    with mmdebstrap (needs root and Debian's mmdebstrap) and fill the cache.
    """
    import docker.errors

    tag = base_image_tag()
    if not force:
        try:
            client.images.get(tag)  # type: ignore[attr-defined]
            log(f"base image {tag} is present")
            return tag
        except docker.errors.ImageNotFound:
            pass
    cached = cache_dir() / f"runner-base-{recipe_hash()}.tar.zst"
    if cached.exists() and not force:
        log(f"loading {tag} from the cache {cached}")
        _run(["sh", "-c", f"zstd -dc '{cached}' | docker load"], log)
        return tag
    for tool in ("mmdebstrap", "zstd"):
        if shutil.which(tool) is None:
            raise ExecutorError(
                f"{tool} is needed to build the base image without a registry: "
                "apt-get install -y mmdebstrap zstd (or bash scripts/install-docker)"
            )
    if os.geteuid() != 0:
        raise ExecutorError("building the base image with mmdebstrap needs root")
    with tempfile.TemporaryDirectory(prefix="mlpipe-bootstrap-") as work:
        rootfs = Path(work) / "rootfs.tar"
        command = [
            "mmdebstrap", "--variant=apt", "--quiet",
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            *[f"--customize-hook={hook}" for hook in _customize_hooks()],
            SUITE, str(rootfs),
        ]
        log(f"building {tag} with mmdebstrap (about a minute)")
        _run(command, log, env={"PATH": os.environ.get("PATH", ""), "HOME": "/root"})
        _run([
            "docker", "import",
            "-c", 'ENTRYPOINT ["/usr/bin/tini", "-s", "-g", "--"]',
            "-c", f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "-c", "ENV HOME=/tmp PYTHONUNBUFFERED=1",
            "-c", f"LABEL org.mlpipe.recipe={recipe_hash()}",
            str(rootfs), tag,
        ], log)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    _run(["sh", "-c", f"docker save '{tag}' | zstd -q -T0 -o '{partial}' -f"], log)
    partial.rename(cached)  # a killed bootstrap never leaves a truncated cache entry
    log(f"cached {tag} in {cached}")
    return tag
