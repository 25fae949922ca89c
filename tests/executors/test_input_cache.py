"""The worker's input cache against fsspec's local filesystem: entries appear whole or not
at all, each step gets its own copy, and the least recently used entries go first."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import fsspec
import pytest

from mlpipe_jupyter.executors.dask.input_cache import InputCache


@pytest.fixture
def datastore(tmp_path: Path) -> tuple[Any, str, str]:
    """(filesystem, URL, root) of a datastore with three committed 100-byte folders."""
    root = tmp_path / "store"
    for name in ("a", "b", "c"):
        folder = root / "data" / name
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "x.bin").write_bytes(name.encode() * 100)
    return fsspec.filesystem("file"), f"file://{root}", str(root)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_is_downloaded_once_and_each_step_gets_its_own_copy(
        datastore: tuple[Any, str, str], tmp_path: Path) -> None:
    fs, url, root = datastore
    cache = InputCache(tmp_path / "cache", max_bytes=10_000)
    first, second = tmp_path / "step1" / "d", tmp_path / "step2" / "d"
    assert cache.fetch(fs, url, root, "data/a", first) == \
        "100 B downloaded into the worker's input cache"
    (Path(root) / "data" / "a" / "sub" / "x.bin").unlink()  # proves the next copy is cached
    assert cache.fetch(fs, url, root, "data/a", second) == "100 B from the worker's input cache"
    assert _tree(first) == _tree(second) == {"sub/x.bin": b"a" * 100}
    (second / "sub" / "x.bin").write_bytes(b"changed by a step")
    third = tmp_path / "step3" / "d"
    cache.fetch(fs, url, root, "data/a", third)
    assert _tree(third) == {"sub/x.bin": b"a" * 100}
    assert not any((tmp_path / "cache" / "tmp").iterdir())


def test_least_recently_used_entries_are_evicted_and_big_folders_not_kept(
        datastore: tuple[Any, str, str], tmp_path: Path) -> None:
    fs, url, root = datastore
    cache = InputCache(tmp_path / "cache", max_bytes=250)
    for name in ("a", "b"):
        cache.fetch(fs, url, root, f"data/{name}", tmp_path / f"first-{name}")
    assert "from" in cache.fetch(fs, url, root, "data/a", tmp_path / "again-a")  # a: newest
    cache.fetch(fs, url, root, "data/c", tmp_path / "first-c")  # 300 B > 250: b goes
    assert "from" in cache.fetch(fs, url, root, "data/a", tmp_path / "still-a")
    assert "downloaded" in cache.fetch(fs, url, root, "data/b", tmp_path / "b-again")

    tiny = InputCache(tmp_path / "tiny", max_bytes=50)
    note = tiny.fetch(fs, url, root, "data/a", tmp_path / "big")
    assert note == "downloaded (larger than the worker's whole input cache)"
    assert _tree(tmp_path / "big") == {"sub/x.bin": b"a" * 100}
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir() if p.is_dir()) == ["tmp"]


def test_a_failed_download_leaves_no_entry(datastore: tuple[Any, str, str],
                                           tmp_path: Path) -> None:
    fs, url, root = datastore

    class Failing:  # the connection drops after the listing
        def __getattr__(self, name: str) -> Any:
            return getattr(fs, name)

        def get(self, keys: list[str], targets: list[str]) -> None:
            fs.get(keys[:1], targets[:1])  # one file arrives, then the connection drops
            raise ConnectionError("connection reset")

    cache = InputCache(tmp_path / "cache", max_bytes=10_000)
    with pytest.raises(ConnectionError):
        cache.fetch(Failing(), url, root, "data/a", tmp_path / "step1")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()) == ["tmp"]
    assert not any((tmp_path / "cache" / "tmp").iterdir())
    assert "downloaded into" in cache.fetch(fs, url, root, "data/a", tmp_path / "step2")


def test_steps_fetching_the_same_folder_at_once_all_get_it_whole(
        datastore: tuple[Any, str, str], tmp_path: Path) -> None:
    fs, url, root = datastore
    cache = InputCache(tmp_path / "cache", max_bytes=10_000)
    notes: list[str] = []
    threads = [threading.Thread(target=lambda i=i: notes.append(
        cache.fetch(fs, url, root, "data/b", tmp_path / f"step{i}"))) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(notes) == 6
    for i in range(6):
        assert _tree(tmp_path / f"step{i}") == {"sub/x.bin": b"b" * 100}
    assert sum(1 for p in (tmp_path / "cache").iterdir() if (p / "size").is_file()) == 1


def test_the_size_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPIPE_INPUT_CACHE_GB", "0")
    assert InputCache.from_environment() is None
    monkeypatch.setenv("MLPIPE_INPUT_CACHE_GB", "lots")
    with pytest.raises(ValueError, match="MLPIPE_INPUT_CACHE_GB='lots' is not a number"):
        InputCache.from_environment()
    monkeypatch.setenv("MLPIPE_INPUT_CACHE_GB", "0.5")
    monkeypatch.setenv("MLPIPE_INPUT_CACHE", "/somewhere")
    assert InputCache.from_environment() == InputCache(Path("/somewhere"), 2**29)
