"""A worker host's cache of the datastore folders its steps read.

With an object-storage datastore every step downloads its inputs. A fan-out of steps that
read the same dataset would fetch it once per step; with this cache each host fetches it
once and copies it locally after that. Caching is safe because what steps read is
content-addressed and never changes once committed (``results/<result_id>/<output>``,
``data/<content hash>``), so an entry is keyed by the datastore URL and that prefix alone.

Each step still gets its own copy: a step that wrote into an input folder would otherwise
change what later steps read.

Layout under the cache root (``$MLPIPE_INPUT_CACHE``, default ``~/.cache/mlpipe/inputs``):

- ``<key>/data/...`` a complete entry; ``<key>/size`` its bytes. An entry appears only by
  the rename of a finished download, so a killed worker never leaves a partial one;
- ``<key>.lock`` held shared while a step copies from the entry, exclusively to evict it
  (lock files stay: removing one could let an eviction miss a reader's lock);
- ``tmp/`` downloads in progress and entries being deleted.

Every worker process on a host shares the cache. The least recently used entries go when
the total passes ``$MLPIPE_INPUT_CACHE_GB`` (default 20); ``0`` turns the cache off.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe_jupyter.executors.dask import objstore

DIR_VARIABLE = "MLPIPE_INPUT_CACHE"
SIZE_VARIABLE = "MLPIPE_INPUT_CACHE_GB"
DEFAULT_GB = 20.0


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class InputCache:
    """The cache folder ``root`` of this host, holding at most ``max_bytes`` of entries."""

    root: Path
    max_bytes: int

    @classmethod
    def from_environment(cls) -> InputCache | None:
        """The cache this worker's environment asks for; None when it is turned off."""
        try:
            gigabytes = float(os.environ.get(SIZE_VARIABLE, DEFAULT_GB))
        except ValueError:
            raise ValueError(f"{SIZE_VARIABLE}={os.environ[SIZE_VARIABLE]!r} is not a "
                             f"number of GB (0 turns the input cache off)") from None
        if gigabytes <= 0:
            return None
        root = Path(os.environ.get(DIR_VARIABLE) or Path.home() / ".cache" / "mlpipe" / "inputs")
        return cls(root, int(gigabytes * 2**30))

    def fetch(self, fs: Any, url: str, root: str, prefix: str, dest: Path) -> str:
        """Make ``dest`` (absent or empty) a copy of the committed folder ``prefix`` of the
        datastore ``url`` (``root``: its path in ``fs``), from the cache when it holds the
        folder; returns what happened, for the step's log."""
        key = hashlib.sha256(f"{url.rstrip('/')}/{prefix}".encode()).hexdigest()[:32]
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        size = self._copy_entry(key, dest)
        if size is not None:
            return f"{_human(size)} from the worker's input cache"
        if not self._download(fs, f"{root}/{prefix}", key, dest):
            return "downloaded (larger than the worker's whole input cache)"
        size = self._copy_entry(key, dest)
        if size is None:  # another process evicted the new entry before we copied it
            objstore.download_folder(fs, f"{root}/{prefix}", dest)
            return "downloaded"
        self._evict(keep=key, keep_size=size)
        return f"{_human(size)} downloaded into the worker's input cache"

    def _copy_entry(self, key: str, dest: Path) -> int | None:
        """Copy the entry ``key`` into ``dest`` and mark it used; its size, or None when the
        cache does not hold it."""
        entry = self.root / key
        with self._lock(key, exclusive=False):
            if not (entry / "size").is_file():
                return None
            os.utime(entry)  # most recently used
            _copy_tree(entry / "data", dest)
            return int((entry / "size").read_text())

    def _download(self, fs: Any, remote: str, key: str, dest: Path) -> bool:
        """Download ``remote`` as the entry ``key`` (unless another process just did);
        False when it is larger than the whole cache: then it is moved into ``dest``."""
        tmp = self.root / "tmp" / f"{key}-{objstore.unique_suffix()}"
        try:
            objstore.download_folder(fs, remote, tmp / "data")
            size = folder_bytes(tmp / "data")
            if size > self.max_bytes:
                _move_tree(tmp / "data", dest)
                return False
            (tmp / "size").write_text(str(size))
            try:
                tmp.rename(self.root / key)  # atomic: the entry is whole or absent
            except OSError:  # another worker process finished the same download first
                pass
            return True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _evict(self, keep: str, keep_size: int) -> None:
        """Remove least recently used entries until the cache fits, skipping ``keep`` (of
        ``keep_size`` bytes) and entries a step is copying from right now."""
        entries = []
        for entry in self.root.iterdir():
            if entry.name in {"tmp", keep} or not (entry / "size").is_file():
                continue
            try:
                entries.append((entry.stat().st_mtime, int((entry / "size").read_text()), entry))
            except (OSError, ValueError):
                continue
        total = keep_size + sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries):
            if total <= self.max_bytes:
                return
            try:
                with self._lock(entry.name, exclusive=True, wait=False):
                    trash = self.root / "tmp" / f"evicted-{objstore.unique_suffix()}"
                    entry.rename(trash)
            except BlockingIOError:
                continue  # in use: try the next one
            except OSError:
                continue  # already evicted by another process
            shutil.rmtree(trash, ignore_errors=True)
            total -= size

    @contextmanager
    def _lock(self, key: str, exclusive: bool, wait: bool = True) -> Iterator[None]:
        with open(self.root / f"{key}.lock", "a") as handle:
            flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            fcntl.flock(handle, flags if wait else flags | fcntl.LOCK_NB)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _copy_tree(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest, dirs_exist_ok=True)


def _move_tree(source: Path, dest: Path) -> None:
    """``source``'s files into ``dest`` (absent or empty), by a rename when they can be."""
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    if dest.exists():
        _copy_tree(source, dest)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(dest))
