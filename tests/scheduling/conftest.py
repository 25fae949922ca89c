"""Scheduling fixtures: a published pipeline, a controllable clock and a fake run launcher."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlpipe_jupyter.scheduling.publishing import PublishedPipeline, publish
from mlpipe_jupyter.scheduling.triggering import PreparedRun
from mlpipe_jupyter.store import Store
from tests.conftest import write_notebook

# 2026-01-01 00:00:00 UTC
T0 = 1767225600.0

PIPELINE_CELLS = [
    "%%mlstep prep --input raw=dataset:nums --output out --param n=1 --param label='x'\n"
    "import shutil\n"
    "text = (inputs.raw / 'nums.txt').read_text()\n"
    "(outputs.out / 'result.txt').write_text(f'{label}:{n}:{text}')\n"
    "print('read', text)",
]


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = T0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


@dataclass
class FakeHandle:
    run_id: str
    pid: int | None = None
    code: int | None = None
    terminated: bool = False
    killed: bool = False

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.terminated = True

    def kill(self) -> None:
        self.killed = True


@dataclass
class FakeLauncher:
    """Records launches instead of starting processes; tests set each handle's exit code."""

    launched: list[tuple[PreparedRun, FakeHandle]] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    exit_on_terminate: bool = True

    def launch(self, store: Store, prepared: PreparedRun) -> FakeHandle:
        handle = FakeHandle(prepared.run_id)
        self.launched.append((prepared, handle))
        return handle

    def adopt(self, store: Store, pid: int | None, run_id: str) -> FakeHandle:
        self.adopted.append(run_id)
        return next(h for _, h in self.launched if h.run_id == run_id)

    @property
    def handles(self) -> list[FakeHandle]:
        return [h for _, h in self.launched]


def register_nums(store: Store, root: Path, text: str) -> int:
    folder = root / f"nums-{text}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nums.txt").write_text(text)
    version, _ = store.datasets.register("nums", folder)
    return version.version


@pytest.fixture
def published(store: Store, workspace_dir: Path) -> PublishedPipeline:
    register_nums(store, workspace_dir / "data", "1 2 3")
    notebook = write_notebook(workspace_dir / "pipe.ipynb", PIPELINE_CELLS)
    version, created = publish(store, notebook, "pipe")
    assert created
    return version
