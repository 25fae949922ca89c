"""Folders in object storage through fsspec: upload, download, commit with a marker.

Used by the runner (inputs up, results down) and by the workers (inputs down, outputs up).
Layout under the datastore URL, content-addressed like the local store:

- ``results/<result_id>/<output>/...`` a committed step result, present only once
  ``results/<result_id>/_COMMITTED`` exists (written last);
- ``data/<content hash>/...`` a dataset folder a step reads, with its own ``_COMMITTED``;
- ``staging/<unique>/...`` an attempt's outputs before they are committed.

Credentials come from fsspec's and the SDKs' standard places (environment variables,
config files); nothing here reads, passes or prints them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

MARKER = "_COMMITTED"


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, root path without scheme) of a datastore URL."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(url)
    return fs, root.rstrip("/")


# The package that gives fsspec each URL scheme, for error messages.
BACKEND_PACKAGES = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs", "az": "adlfs"}


def install_hint(url: str) -> str:
    """What to install for fsspec to open ``url``: ``pip install s3fs`` for ``s3://...``."""
    scheme = url.split("://", 1)[0]
    package = BACKEND_PACKAGES.get(scheme)
    return f"pip install {package}" if package else f"install fsspec's backend of {scheme}://"


def folder_hash(folder: Path) -> str:
    """A content hash of a folder: relative paths and bytes of every file."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def is_committed(fs: Any, prefix: str) -> bool:
    fs.invalidate_cache()
    return bool(fs.exists(f"{prefix}/{MARKER}"))


# Folders are moved as lists of files in one call: fsspec's async backends (s3fs, adlfs,
# gcsfs) then transfer them concurrently, where a loop would pay one round trip per file.

def upload_folder(fs: Any, local: Path, prefix: str) -> None:
    files = sorted(p for p in local.rglob("*") if p.is_file())
    if files:
        fs.put([str(p) for p in files],
               [f"{prefix}/{p.relative_to(local).as_posix()}" for p in files])


def download_folder(fs: Any, prefix: str, local: Path) -> None:
    """Every object under ``prefix`` (but the marker) into ``local`` (created)."""
    local.mkdir(parents=True, exist_ok=True)
    fs.invalidate_cache()
    keys, targets = [], []
    for key in fs.find(prefix):
        relative = key[len(prefix):].lstrip("/")
        if not relative or relative == MARKER:
            continue
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        keys.append(key)
        targets.append(str(target))
    if keys:
        fs.get(keys, targets)


def commit(fs: Any, staging: str, prefix: str) -> bool:
    """Copy ``staging`` to ``prefix`` and write the marker last; False when another writer
    committed ``prefix`` first (theirs is kept). The staging objects are removed."""
    try:
        if is_committed(fs, prefix):
            return False
        fs.invalidate_cache()
        keys = fs.find(staging)
        if keys:
            fs.copy(keys, [f"{prefix}/{key[len(staging):].lstrip('/')}" for key in keys])
        fs.pipe_file(f"{prefix}/{MARKER}", b"")
        return True
    finally:
        try:
            fs.rm(staging, recursive=True)
        except (FileNotFoundError, OSError):
            pass


def publish_folder(fs: Any, local: Path, prefix: str, staging: str) -> bool:
    """Upload ``local`` as the committed ``prefix`` unless it is there already."""
    if is_committed(fs, prefix):
        return False
    upload_folder(fs, local, staging)
    return commit(fs, staging, prefix)


def unique_suffix() -> str:
    return f"{os.uname().nodename}-{os.getpid()}-{os.urandom(6).hex()}"
