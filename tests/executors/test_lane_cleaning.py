"""The lane's cleaning between steps, on generated folder trees: it empties a folder but
never what is mounted into it, and it does nothing at all outside a lane's container.

The cleaning deletes files; these tests run it on trees under ``tmp_path`` (the mounts
stand for the workspace's folders that a lane mounts under the container's /tmp), so a
mistake here costs a temporary folder, not a user's results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_jupyter.executors.docker import lane_server

NAMES = st.sampled_from(["a", "b", "c", "d", ".hidden", "sp ace", "ü"])
# a tree: a name maps to None (a file) or to a subtree (a folder)
TREES = st.recursive(st.dictionaries(NAMES, st.none(), max_size=3),
                     lambda children: st.dictionaries(NAMES, st.none() | children, max_size=3),
                     max_leaves=14)


def build(root: Path, tree: dict[str, object]) -> list[Path]:
    """Make ``tree`` under ``root``; every folder made, deepest last."""
    folders = []
    for name, child in tree.items():
        path = root / name
        if child is None:
            path.write_text(name)
        else:
            path.mkdir()
            folders.append(path)
            folders += build(path, child)  # type: ignore[arg-type]
    return folders


def snapshot(folder: Path) -> dict[str, str | None]:
    """Every path under ``folder`` (relative), with a file's text."""
    return {str(path.relative_to(folder)): (path.read_text() if path.is_file() else None)
            for path in sorted(folder.rglob("*"))}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(tree=TREES, picks=st.lists(st.integers(min_value=0, max_value=50), max_size=3),
       link=st.booleans())
def test_emptying_removes_everything_but_what_is_mounted_inside(
        tmp_path_factory: pytest.TempPathFactory, tree: dict[str, object], picks: list[int],
        link: bool) -> None:
    root = tmp_path_factory.mktemp("tmp")
    outside = tmp_path_factory.mktemp("outside")  # a symlink's target: never followed
    (outside / "precious").write_text("keep")
    folders = build(root, tree)
    mounts = {str(folders[pick % len(folders)]) for pick in picks} if folders else set()
    if link:
        (root / "link").symlink_to(outside, target_is_directory=True)
    kept = {mount: snapshot(Path(mount)) for mount in mounts}

    lane_server._empty(str(root), set(mounts))

    for mount, before in kept.items():  # a mount is untouched, whatever it holds
        assert Path(mount).is_dir() and snapshot(Path(mount)) == before
    left = {str(path) for path in root.rglob("*")}
    # nothing else is left but the folders that lead to a mount
    assert all(any(path == mount or mount.startswith(path + os.sep) or
                   path.startswith(mount + os.sep) for mount in mounts) for path in left), left
    assert (outside / "precious").read_text() == "keep"
    shutil.rmtree(root)


def test_a_folder_holding_the_kept_runtime_folder_is_emptied_around_it(tmp_path: Path) -> None:
    runtime = tmp_path / "mlpipe-host-x"
    runtime.mkdir()
    (runtime / "kt.sock").write_text("socket")
    (tmp_path / "left-by-step").write_text("x")
    (tmp_path / ".ipython" / "profile_default").mkdir(parents=True)
    assert lane_server._empty(str(tmp_path), {str(runtime)}) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mlpipe-host-x"]
    assert (runtime / "kt.sock").read_text() == "socket"


def test_outside_a_lane_container_the_cleaning_does_nothing(tmp_path: Path) -> None:
    """Even with MLPIPE_LANE=1 set, and on a machine that is itself a container (as CI's
    is: /.dockerenv), no process is killed and no folder is emptied: PID 1 is not a
    lane's."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        script = ("import json, os\n"
                  "os.environ['MLPIPE_LANE'] = '1'\n"
                  "from mlpipe_jupyter.executors.docker import lane_server\n"
                  "print(json.dumps(lane_server.clean_container()))\n")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              check=True, timeout=60)
        assert done.stdout.strip() == '{"cleaned": false}'
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_mount_points_are_read_with_their_escapes() -> None:
    text = ("36 35 98:0 /mnt1 /tmp/pytest\\040of\\040me/w rw,noatime master:1 - ext3 "
            "/dev/root rw\n"
            "37 35 98:0 / /dev/shm rw - tmpfs shm rw\n")
    assert lane_server.mount_points_in(text) == {"/tmp/pytest of me/w", "/dev/shm"}
