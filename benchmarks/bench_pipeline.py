#!/usr/bin/env python
"""End-to-end benchmark of ``mlpipe run`` against the ``papermill`` command.

Every workload is a real notebook written to a temporary folder and run through the
``mlpipe`` and ``papermill`` commands in fresh subprocesses, exactly as a user would; wall
times are taken with ``time.perf_counter()`` around each subprocess. Each workload gets its
own workspace (``MLPIPE_HOME``) inside the temporary folder, which is deleted at the end.

The unit of time is **T**: the wall time of one ``papermill`` command run of a trivial
one-cell notebook (median of 3, measured in the same invocation, after one warm-up run).
T is what a user pays today to run one notebook, so the targets say how much of that
mlpipe may spend.

Workloads and targets (``ratio`` = mlpipe time / baseline, PASS when ratio <= target):

1. **chain**: 10 trivial steps, each reading the previous step's output folder and writing
   a tiny file, cold run in an empty workspace. Baseline: the same 10 notebooks run one after
   the other by the ``papermill`` command (same code, paths filled in). Target <= 0.35.
2. **fan-out**: 8 independent steps that each ``time.sleep(2)``, run with
   ``--max-parallel 8``. Baseline: 2 s + 3 T. Target <= 1.
3. **no-op re-run**: the chain again in a fresh ``mlpipe`` process, every step reused
   (median of 3). Baseline: T. Target <= 0.5.
4. **edit last step**: the chain again after rewriting only the last step's code in the
   notebook file (median of 3, a different edit each time): 9 steps reused, 1 executed.
   Baseline: T. Target <= 1.5.
5. **1 GiB output**: a step writes a 1 GiB file in 1 MiB blocks of zeros then fsyncs (the
   same work as ``dd if=/dev/zero bs=1M count=1024 conv=fsync``); the next step checks its
   size and streams all of it back in 1 MiB reads into a page-aligned buffer, as dd does.
   Five samples of dd, of dd with the read and of the run, back to back after a sync in a
   rotating order; the best of each (this VM's disk is bimodal: see ``big_output``).
   Baseline: 1.3 x dd time + 2 T. Target <= 1. For reference (no target), the same two
   steps' code as two bare ``python -c`` processes, sampled with the others: the floor of
   any tool that runs steps as processes.
6. **1 GiB disk usage**: ``du`` of that workspace after the run, against the 1 GiB written.
   A copied output would be ~2 GiB. Target <= 1.5 (no copy).
7. **docker overhead**: the chain with ``--compute docker`` and locally, both cold (medians
   of 3, interleaved); the difference per step against T. Target <= 0.3 (skip with
   ``--no-docker``).
8. **dask fan-out**: the fan-out workload with ``--compute dask://...`` on a local cluster
   of 2 one-thread worker processes (started and stopped by the benchmark), against the same
   workload on the local executor with ``--max-parallel 2`` (the same parallelism).
   Target <= 1.3 (skip with ``--no-dask``; skipped when dask is not installed).
9. **object-store inputs**: 8 steps that each read the same dataset (500 files of 128 KiB,
   like a folder of images) on the 2-worker cluster with an S3 datastore (a moto server in
   this process), with the workers' input cache, against the same run with the cache turned
   off (``MLPIPE_INPUT_CACHE_GB=0``); each run uses its own datastore prefix. Target <= 0.8
   (skipped with row 8, or without s3fs/moto).
10. **1 GiB DataFrame hand-over**: a step builds a 1 GiB DataFrame and the next step uses it
    (``--use make.df``), against the same two steps without the hand-over (the next step
    runs ``--after`` the first and uses nothing); the difference of the medians of 3 runs
    each is what handing the frame over costs. Baseline: saving and loading the same frame in the same format (pickle
    protocol 5) in one process (median of 3). Target <= 1.5.
11. **one copy for three consumers**: a 256 MiB DataFrame used by three steps; ``du`` of the
    saved variables after the run against the frame's size. Target <= 1.2 (stored once).
12. **4 x 2 sweep**: a prepare -> train -> evaluate notebook (each step sleeps 0.5 s;
    prepare uses ``frac``, train ``C``) run as one ``mlpipe run --sweep C=... --sweep
    frac=...`` (8 members; prepare runs twice, train and evaluate 8 times), against the 8
    combinations run as 8 separate ``mlpipe run -p C=... -p frac=...`` one after the other
    in one workspace (what a shell loop does; they reuse prepare too). Both cold, each in
    its own workspace. Target <= 0.6.

Usage::

    python benchmarks/bench_pipeline.py            # print the report, exit 0
    python benchmarks/bench_pipeline.py --check    # exit 1 when a target is missed
    python benchmarks/bench_pipeline.py -v         # also `mlpipe show latest` per workload

It is a report, not a test: the machines are noisy, so runs are few and medians are taken
only where they are cheap. It takes about 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

MIB = 1 << 20
GIB = 1 << 30

CHAIN_STEPS = 10
FAN_OUT_STEPS = 8
FAN_OUT_SLEEP = 2.0  # seconds each fan-out step sleeps
BIG_BLOCKS = 1024  # 1 MiB blocks: 1 GiB
T_SAMPLES = 3  # papermill runs of the trivial notebook (median)
RERUN_SAMPLES = 3  # no-op and edit re-runs (median)
FRAME_FLOOR_SAMPLES = 3  # samples of the frame hand-over's floor (median)
BIG_SAMPLES = 5  # samples of each 1 GiB measure (the best counts: see ``big_output``)
# cold docker and local chains (median): one docker chain moves by ~1 s from run to run
DOCKER_SAMPLES = 3
MAX_TMPDIR_LENGTH = 50  # Unix socket paths must stay under ~100 characters
FREE_SPACE_NEEDED = 3 * GIB  # for the 1 GiB workload (dd file and result, one at a time)

# Baselines built from T (and dd): fan-out 2 s + 3 T; 1 GiB output 1.3 x dd + 2 T.
FAN_OUT_T = 3
BIG_DD_FACTOR = 1.3
BIG_T = 2

# Targets: the largest allowed mlpipe time / baseline.
CHAIN_TARGET = 0.35
FAN_OUT_TARGET = 1.0
NOOP_TARGET = 0.5
EDIT_TARGET = 1.5
BIG_TARGET = 1.0
DU_TARGET = 1.5
DOCKER_OVERHEAD_TARGET = 0.3  # extra time per step in a container, as a fraction of T
REPO = Path(__file__).resolve().parents[1]
DASK_WORKERS = 2
DASK_FAN_OUT_TARGET = 1.3  # dask fan-out time / local fan-out time at the same parallelism
OBJSTORE_STEPS = 8
OBJSTORE_FILES = 500  # an image-folder-like dataset: many files of OBJSTORE_FILE_KIB each
OBJSTORE_FILE_KIB = 128
OBJSTORE_CACHE_TARGET = 0.8  # with the workers' input cache / without it
SWEEP_C = ("0.01", "0.1", "1", "10")
SWEEP_FRAC = ("0.5", "0.8")
SWEEP_STEP_SECONDS = 0.5
SWEEP_TARGET = 0.6  # one sweep / the same combinations as separate runs
FRAME_COLUMNS = 16  # float64 columns of FRAME_ROWS rows: 1 GiB
FRAME_ROWS = 8 << 20
HANDOVER_TARGET = 1.5  # hand-over cost / save + load in one process
HANDOVER_SAMPLES = 3  # runs with and without the hand-over (median of each)
SHARED_FRAME_ROWS = 2 << 20  # 256 MiB with FRAME_COLUMNS columns
SHARED_CONSUMERS = 3
SHARED_TARGET = 1.2  # saved bytes / frame bytes

# The unit P (issue 18): one `papermill` command on the trivial notebook in a lean virtual
# environment holding only papermill and ipykernel (made by the benchmark, cached).
P_SAMPLES = 3
LEAN_PACKAGES = ("papermill", "ipykernel")
LEAN_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlpipe-bench"
# Issue 18's targets for local execution (fork-started kernels)
FORK_CHAIN_TARGET = 0.12  # cold chain of 10 / the papermill loop over the same notebooks
FORK_EDIT_TARGET = 0.5  # (edit-last-step re-run - no-op re-run) / P
FORK_FAN_OUT_TARGET = 0.8  # (fan-out wall - 2 s) / P
FORK_DOCKER_TARGET = 0.25  # (docker chain - local chain) / steps / P
FORK_HANDOVER_TARGET = 1.2  # the 1 GiB run / dd writing 1 GiB with fsync
LONG_CHAIN_STEPS = 100
LONG_NOOP_TARGET = 0.45  # no-op re-run of the 100-step chain / P


class BenchmarkError(RuntimeError):
    """A command the benchmark runs failed: the numbers would mean nothing."""


# -- results -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One line of the report: a measured value against a baseline and a target ratio."""

    workload: str
    measured: float
    baseline_label: str
    baseline: float
    target: float | None  # the largest allowed measured / baseline; None: for reference
    unit: str = "s"

    @property
    def ratio(self) -> float:
        return self.measured / self.baseline

    @property
    def passed(self) -> bool:
        return self.target is None or self.ratio <= self.target


def _amount(value: float, unit: str) -> str:
    return f"{value:.2f} {unit}"


def render_table(rows: Sequence[Row]) -> str:
    """The report as a markdown table."""
    lines = [
        "| # | Workload | mlpipe | Baseline | Ratio | Target | Result |",
        "|---|----------|-------:|----------|------:|-------:|--------|",
    ]
    for number, row in enumerate(rows, start=1):
        target, result = ("—", "reference") if row.target is None else (
            f"≤ {row.target:.2f}", "PASS" if row.passed else "FAIL")
        lines.append(
            f"| {number} | {row.workload} | {_amount(row.measured, row.unit)} "
            f"| {row.baseline_label} = {_amount(row.baseline, row.unit)} "
            f"| {row.ratio:.2f} | {target} | {result} |"
        )
    return "\n".join(lines)


# -- notebooks -------------------------------------------------------------------------------
def notebook_json(sources: Sequence[str]) -> dict[str, Any]:
    """An nbformat 4.5 notebook with one code cell per source, for the python3 kernel."""
    cells: list[dict[str, Any]] = [
        {"cell_type": "code", "execution_count": None, "id": f"cell-{index}",
         "metadata": {}, "outputs": [], "source": source}
        for index, source in enumerate(sources)
    ]
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_notebook(path: Path, sources: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook_json(sources), indent=1), encoding="utf-8")
    return path


def chain_step_name(index: int) -> str:
    return f"s{index:02d}"


def chain_step_code(index: int, edit: int = 0) -> str:
    """The body of chain step ``index``: read the previous value (if any), write the next.

    ``edit`` only changes an assignment in the code, hence the step's fingerprint: it is how
    the last step is edited between runs."""
    read = (
        "value = int((inputs.prev / 'value.txt').read_text())\n" if index > 0 else "value = 0\n"
    )
    return f"{read}edit = {edit}\n(outputs.out / 'value.txt').write_text(str(value + 1))\n"


def chain_pipeline(steps: int, last_edit: int = 0) -> list[str]:
    """The chain as ``%%mlstep`` cells; ``last_edit`` varies the last step's code only."""
    cells = []
    for index in range(steps):
        name = chain_step_name(index)
        header = f"%%mlstep {name} --output out"
        if index > 0:
            header += f" --input prev={chain_step_name(index - 1)}.out"
        edit = last_edit if index == steps - 1 else 0
        cells.append(f"{header}\n{chain_step_code(index, edit)}")
    return cells


def chain_standalone(steps: int, folder: Path) -> list[Path]:
    """The same chain as plain notebooks for papermill: a first cell binds ``inputs`` and
    ``outputs`` to fixed folders, the second cell is the step's code, unchanged."""
    paths = []
    for index in range(steps):
        out = folder / "data" / chain_step_name(index)
        prev = folder / "data" / chain_step_name(index - 1)
        binding = (
            "from pathlib import Path\nfrom types import SimpleNamespace\n"
            f"inputs = SimpleNamespace(prev=Path({str(prev)!r}))\n"
            f"outputs = SimpleNamespace(out=Path({str(out)!r}))\n"
            "outputs.out.mkdir(parents=True, exist_ok=True)\n"
        )
        paths.append(write_notebook(folder / f"{chain_step_name(index)}.ipynb",
                                    [binding, chain_step_code(index)]))
    return paths


def fan_out_pipeline(steps: int, seconds: float) -> list[str]:
    return [
        f"%%mlstep f{index} --output out\nimport time\ntime.sleep({seconds})\n"
        "(outputs.out / 'done.txt').write_text('done')\n"
        for index in range(steps)
    ]


def sweep_pipeline(seconds: float) -> list[str]:
    """prepare (uses frac) -> train (uses C) -> evaluate, each sleeping ``seconds``."""
    return [
        f"%%mlstep prepare --output clean --param frac=0.8\nimport time\ntime.sleep({seconds})\n"
        "(outputs.clean / 'rows.txt').write_text(str(int(100 * frac)))",
        f"%%mlstep train --input data=prepare.clean --output model --param C=1.0\n"
        f"import time\ntime.sleep({seconds})\n"
        "(outputs.model / 'w.txt').write_text(str(C * int((inputs.data / 'rows.txt').read_text())))",
        f"%%mlstep evaluate --input model=train.model\nimport time\ntime.sleep({seconds})\n"
        "context.log('score', float((inputs.model / 'w.txt').read_text()))",
    ]


def write_big_code(path: str, blocks: int) -> str:
    """Code writing ``blocks`` MiB of zeros to the file at the expression ``path`` in 1 MiB
    writes, then fsync (what dd's ``conv=fsync`` does)."""
    return (
        "import os\n"
        "block = bytes(1 << 20)\n"
        f"with open({path}, 'wb') as handle:\n"
        f"    for _ in range({blocks}):\n"
        "        handle.write(block)\n"
        "    handle.flush()\n"
        "    os.fsync(handle.fileno())\n"
    )


def read_big_code(path: str, blocks: int) -> str:
    """Code checking the size of the file at the expression ``path`` and streaming all of
    it back in 1 MiB reads; ``total`` holds the bytes read."""
    return (
        f"path = {path}\n"
        "size = path.stat().st_size\n"
        f"assert size == {blocks} << 20, size\n"
        # page-aligned, as dd's buffer is: glibc puts a 1 MiB bytearray 16 bytes past a
        # page, and on these VMs the kernel copies into such a buffer ~4x slower (0.45 s
        # against 0.11 s a GiB, measured): that would time the buffer, not the hand-over
        "import mmap\n"
        "buffer = mmap.mmap(-1, 1 << 20)\n"
        "total = 0\n"
        "with open(path, 'rb', buffering=0) as handle:\n"
        "    while (count := handle.readinto(buffer)):\n"
        "        total += count\n"
        "assert total == size, (total, size)\n"
    )


def big_output_pipeline(blocks: int) -> list[str]:
    """Write ``blocks`` MiB of zeros in 1 MiB writes + fsync (like dd), then read it all."""
    write = "%%mlstep write_big --output blob\n" + write_big_code("outputs.blob / 'blob.bin'", blocks)
    read = ("%%mlstep read_big --input blob=write_big.blob --output report\n"
            + read_big_code("inputs.blob / 'blob.bin'", blocks)
            + "(outputs.report / 'size.txt').write_text(str(total))\n")
    return [write, read]


def frame_code(rows: int) -> str:
    """Code that builds a DataFrame ``df`` of FRAME_COLUMNS float64 columns."""
    return ("import numpy as np, pandas as pd\n"
            f"df = pd.DataFrame({{f'c{{i}}': np.arange({rows}, dtype='float64') + i "
            f"for i in range({FRAME_COLUMNS})}})\n")


def handover_pipeline(rows: int, hand_over: bool) -> list[str]:
    """A step that builds a frame, and a step that uses it (or only runs after it)."""
    use = ("%%mlstep use --use make.df\nassert df.shape == "
           f"({rows}, {FRAME_COLUMNS}), df.shape\n" if hand_over
           else "%%mlstep use --after make\nx = 1\n")
    return ["%%mlstep make\n" + frame_code(rows), use]


def shared_pipeline(rows: int, consumers: int) -> list[str]:
    return ["%%mlstep make\n" + frame_code(rows)] + [
        f"%%mlstep use{index} --use make.df\ntotal = float(df.c0.sum())\n"
        for index in range(consumers)
    ]


HANDOVER_FLOOR = """
import pickle, sys, time
{frame}
path = sys.argv[1]
start = time.perf_counter()
with open(path, "wb") as handle:
    pickle.dump(df, handle, protocol=5)
del df
with open(path, "rb") as handle:
    df = pickle.load(handle)
print(time.perf_counter() - start)
"""


# -- commands ----------------------------------------------------------------------------------
def find_tool(name: str) -> str:
    """The console script installed next to this Python (not a pyenv shim, whose own start-up
    would be timed), else whatever is on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise BenchmarkError(f"the {name!r} command is not installed")
    return found


def check_package_is_this_checkout() -> None:
    """Fail at once when ``mlpipe_jupyter`` is missing or imported from another checkout:
    one Python environment serves every clone on a machine, so a fresh clone's
    ``pip install -e .`` redirects it, and the numbers would be another tree's."""
    checkout = REPO
    probe = subprocess.run(
        [sys.executable, "-c", "import mlpipe_jupyter; print(mlpipe_jupyter.__file__)"],
        cwd=tempfile.gettempdir(), capture_output=True, text=True)
    if probe.returncode != 0:
        raise BenchmarkError(f"mlpipe_jupyter does not import ({probe.stderr.strip()[-200:]}); "
                             f"run `pip install -e .` in {checkout}")
    package = Path(probe.stdout.strip()).resolve().parent
    if package.parent != checkout:
        raise BenchmarkError(f"mlpipe_jupyter is imported from {package}, not from this "
                             f"checkout; run `pip install -e .` in {checkout}")
    # as installed by pip (scripts/install does this too): compiled, so that no command
    # timed here compiles the package's modules first
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(package)],
                   check=True, capture_output=True)


def run_timed(command: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall seconds of one subprocess, from spawn to exit; raises if it fails."""
    start = time.perf_counter()
    done = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise BenchmarkError(f"{' '.join(command)} exited with {done.returncode}:\n{tail}")
    return elapsed


def _busy_cpu_seconds() -> float:
    """CPU time all processes of the machine spent busy so far (Linux ``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def median_of(samples: int, measure: Callable[[int], float]) -> float:
    """Median of ``measure(i)`` for i in range(samples)."""
    return statistics.median(measure(i) for i in range(samples))


def remove_tree(folder: Path) -> None:
    """Delete a folder, including the read-only result folders mlpipe commits."""

    def allow_and_retry(function: Any, path: str, _info: Any) -> None:
        os.chmod(os.path.dirname(path), 0o755)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o755)
        function(path)

    if folder.exists():
        shutil.rmtree(folder, onerror=allow_and_retry)


def disk_usage(folder: Path) -> int:
    """Bytes ``folder`` occupies on disk (``du -sk``; hard links counted once)."""
    du = shutil.which("du")
    if du:
        done = subprocess.run([du, "-sk", str(folder)], capture_output=True, text=True)
        if done.returncode == 0:
            return int(done.stdout.split()[0]) * 1024
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            info = os.lstat(os.path.join(root, name))
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def write_like_dd(path: Path, blocks: int) -> None:
    """Fallback baseline when ``dd`` is missing: the same loop, in this process."""
    block = bytes(MIB)
    with path.open("wb") as handle:
        for _ in range(blocks):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())


# -- the benchmark ---------------------------------------------------------------------------
class Bench:
    """Runs the workloads in ``root`` (a temporary folder) and collects the report rows."""

    def __init__(self, root: Path, verbose: bool = False, with_docker: bool = True,
                 with_dask: bool = True) -> None:
        self.root = root
        self.verbose = verbose
        self.with_docker = with_docker
        self.with_dask = with_dask
        self.mlpipe = find_tool("mlpipe")
        self.papermill = find_tool("papermill")
        check_package_is_this_checkout()
        # No __pycache__ written into the source tree by the runs we start.
        self.base_env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        self.base_env.pop("MLPIPE_HOME", None)
        # Subprocesses keep their temporary files (mlpipe's kernel IPC socket folders) in
        # root too, so they go with it; only when the path stays short enough for sockets.
        tmp = root / "tmp"
        if len(str(tmp)) <= MAX_TMPDIR_LENGTH:
            tmp.mkdir()
            self.base_env["TMPDIR"] = str(tmp)
        self.t: float = 0.0
        self.p: float = 0.0
        self.chain_times: dict[str, float] = {}
        self.fan_out_time = 0.0
        # the benchmark's own kernel templates (fork-started kernels), stopped at the end
        runtime = root / "rt"
        runtime.mkdir(mode=0o700)
        self.base_env["MLPIPE_RUNTIME_DIR"] = str(runtime)

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # -- helpers ---------------------------------------------------------------------------
    def workload_dir(self, name: str) -> tuple[Path, dict[str, str]]:
        """A folder for one workload, with its own workspace."""
        folder = self.root / name
        folder.mkdir()
        return folder, dict(self.base_env, MLPIPE_HOME=str(folder / ".mlpipe"))

    def cluster_workload_dir(self, name: str) -> tuple[Path, dict[str, str]]:
        """``workload_dir`` for a run on the benchmark's Dask cluster: the runner imports
        this checkout as the workers do (tests.executors.dask_cluster)."""
        folder, env = self.workload_dir(name)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        return folder, env

    def papermill_run(self, notebook: Path) -> float:
        output = notebook.with_name(notebook.stem + ".out.ipynb")
        return run_timed([self.papermill, "--no-progress-bar", str(notebook), str(output)],
                         notebook.parent, self.base_env)

    def mlpipe_run(self, notebook: Path, env: dict[str, str], *options: str) -> float:
        elapsed = run_timed([self.mlpipe, "run", "-q", *options, str(notebook)],
                            notebook.parent, env)
        if self.verbose:
            shown = subprocess.run([self.mlpipe, "show", "latest"], cwd=notebook.parent,
                                   env=env, capture_output=True, text=True)
            print(shown.stdout, file=sys.stderr)
        return elapsed

    # -- P ---------------------------------------------------------------------------------
    def lean_environment(self) -> Path:
        """A virtual environment with only papermill and ipykernel (from PyPI), made once and
        cached (``~/.cache/mlpipe-bench``); its ``papermill`` command."""
        version = ".".join(map(str, sys.version_info[:2]))
        folder = LEAN_CACHE / f"lean-py{version}"
        papermill = folder / "bin" / "papermill"
        if not papermill.is_file():
            self.log(f"making the lean environment for P in {folder} (once)")
            shutil.rmtree(folder, ignore_errors=True)
            folder.parent.mkdir(parents=True, exist_ok=True)
            env = {k: v for k, v in self.base_env.items() if k != "PYTHONPATH"}
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, env=env)
            subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "-q",
                            *LEAN_PACKAGES], check=True, env=env)
        return papermill

    def lean_papermill_run(self, notebook: Path) -> float:
        """One ``papermill`` command of the lean environment on ``notebook``."""
        output = notebook.with_name(notebook.stem + ".lean.ipynb")
        env = {k: v for k, v in self.base_env.items() if k != "PYTHONPATH"}
        return run_timed([str(self.lean_environment()), "--no-progress-bar", str(notebook),
                          str(output)], notebook.parent, env)

    def measure_p(self) -> float:
        """P: the trivial notebook by the lean environment's papermill, the best of 3 after a
        warm-up run. The best, not the median: right after a heavy job (a test run), two
        of three samples took 4.4 s against 1.1 s, and a median would have made every [P]
        target easier by 4x. The best is the lean papermill's own cost, and the strictest
        unit for mlpipe."""
        notebook = write_notebook(self.root / "trivial-p" / "trivial.ipynb", ["x = 1"])
        self.lean_papermill_run(notebook)
        samples = [self.lean_papermill_run(notebook) for _ in range(P_SAMPLES)]
        self.p = min(samples)
        self.log(f"P = {self.p:.2f} s (lean papermill samples: "
                 f"{', '.join(f'{s:.2f}' for s in samples)})")
        return self.p

    def start_template(self) -> None:
        """One untimed 1-step run: it starts the per-user kernel template, as any earlier
        run of the user's would have (the template's own start is logged)."""
        folder, env = self.workload_dir("template-warm-up")
        notebook = write_notebook(folder / "one.ipynb", ["%%mlstep one\nx = 1\n"])
        elapsed = self.mlpipe_run(notebook, env)
        self.log(f"first mlpipe run (starts the kernel template): {elapsed:.2f} s")

    def stop_templates(self) -> None:
        subprocess.run([sys.executable, "-c", "from mlpipe_jupyter.executors.fork_provisioner "
                        "import stop_all; stop_all()"], env=self.base_env, capture_output=True,
                       check=False)

    # -- T ---------------------------------------------------------------------------------
    def measure_t(self) -> float:
        folder = self.root / "trivial"
        notebook = write_notebook(folder / "trivial.ipynb", ["x = 1"])
        self.papermill_run(notebook)  # warm-up: file caches, kernel spec lookup
        samples = [self.papermill_run(notebook) for _ in range(T_SAMPLES)]
        self.t = statistics.median(samples)
        self.log(f"T = {self.t:.2f} s (papermill samples: "
                 f"{', '.join(f'{s:.2f}' for s in samples)})")
        return self.t

    # -- workloads -------------------------------------------------------------------------
    def chain(self) -> list[Row]:
        """Workloads 1, 3 and 4: cold chain, no-op re-run, re-run after editing the last step."""
        folder, env = self.workload_dir("chain")
        standalone = chain_standalone(CHAIN_STEPS, folder / "papermill")
        samples = [self.papermill_run(path) for path in standalone]
        loop = sum(samples)
        self.log(f"papermill loop of {CHAIN_STEPS} notebooks: {loop:.2f} s "
                 f"({', '.join(f'{s:.2f}' for s in samples)})")
        # the [P] row's loop: the same notebooks by P's papermill (the lean environment)
        lean_loop = sum(self.lean_papermill_run(path) for path in standalone)
        self.log(f"lean papermill loop of {CHAIN_STEPS} notebooks: {lean_loop:.2f} s")

        notebook = write_notebook(folder / "chain.ipynb", chain_pipeline(CHAIN_STEPS))
        cold = self.mlpipe_run(notebook, env)
        self.log(f"mlpipe chain, cold: {cold:.2f} s")

        noop = median_of(RERUN_SAMPLES, lambda _: self.mlpipe_run(notebook, env))
        self.log(f"mlpipe chain, no-op re-run (median): {noop:.2f} s")

        def edited(sample: int) -> float:
            write_notebook(notebook, chain_pipeline(CHAIN_STEPS, last_edit=sample + 1))
            return self.mlpipe_run(notebook, env)

        edit = median_of(RERUN_SAMPLES, edited)
        self.log(f"mlpipe chain, last step edited (median): {edit:.2f} s")
        self.chain_times = {"loop": loop, "lean_loop": lean_loop, "cold": cold, "noop": noop,
                            "edit": edit}
        return [
            Row(f"chain of {CHAIN_STEPS} trivial steps, cold run", cold,
                f"papermill loop of the {CHAIN_STEPS} notebooks", loop, CHAIN_TARGET),
            Row(f"no-op re-run of the chain, all reused (median of {RERUN_SAMPLES})", noop,
                "T", self.t, NOOP_TARGET),
            Row(f"re-run after editing the last step (median of {RERUN_SAMPLES})", edit,
                "T", self.t, EDIT_TARGET),
        ]

    def fan_out(self) -> list[Row]:
        """Workload 2: independent sleeping steps, all allowed to run at once."""
        folder, env = self.workload_dir("fanout")
        notebook = write_notebook(folder / "fanout.ipynb",
                                  fan_out_pipeline(FAN_OUT_STEPS, FAN_OUT_SLEEP))
        elapsed = self.mlpipe_run(notebook, env, "--max-parallel", str(FAN_OUT_STEPS))
        self.log(f"mlpipe fan-out: {elapsed:.2f} s")
        self.fan_out_time = elapsed
        return [Row(
            f"fan-out of {FAN_OUT_STEPS} × sleep({FAN_OUT_SLEEP:g}), "
            f"`--max-parallel {FAN_OUT_STEPS}`", elapsed,
            f"{FAN_OUT_SLEEP:g} s + {FAN_OUT_T} T", FAN_OUT_SLEEP + FAN_OUT_T * self.t,
            FAN_OUT_TARGET,
        )]

    def dd_once(self, folder: Path, read_back: bool = False) -> float:
        """Writing BIG_BLOCKS MiB of zeros with dd (1 MiB blocks, fsync at the end), and with
        ``read_back`` reading the file back too (1 MiB blocks): what the 1 GiB workload's
        two steps do to the disk, by dd alone. One sample."""
        target = folder / "dd.bin"
        dd = shutil.which("dd")
        os.sync()  # what the last sample deleted or wrote is not this one's to flush
        try:
            if dd:
                elapsed = run_timed([dd, "if=/dev/zero", f"of={target}", "bs=1M",
                                     f"count={BIG_BLOCKS}", "conv=fsync"], folder, self.base_env)
                if read_back:
                    elapsed += run_timed([dd, f"if={target}", "of=/dev/null", "bs=1M"],
                                         folder, self.base_env)
                return elapsed
            start = time.perf_counter()
            write_like_dd(target, BIG_BLOCKS)
            if read_back:
                with target.open("rb", buffering=0) as handle:
                    while handle.read(MIB):
                        pass
            return time.perf_counter() - start
        finally:
            target.unlink(missing_ok=True)

    def bare_once(self, folder: Path) -> float:
        """The 1 GiB workload's two steps as two bare ``python -c`` processes run one after
        the other (the same write and read code, no tool at all): what any tool that runs
        steps as processes starts from. One sample."""
        target = folder / "bare.bin"
        os.sync()  # as before each dd
        try:
            write = write_big_code(repr(str(target)), BIG_BLOCKS)
            read = "import pathlib\n" + read_big_code(f"pathlib.Path({str(target)!r})", BIG_BLOCKS)
            return (run_timed([sys.executable, "-c", write], folder, self.base_env)
                    + run_timed([sys.executable, "-c", read], folder, self.base_env))
        finally:
            target.unlink(missing_ok=True)

    def big_output(self) -> list[Row]:
        """Workloads 5 and 6: a 1 GiB output passed to the next step, and the disk it uses.
        This disk (a VM's) is bimodal: it writes a GiB in ~0.5 s until its cache is full,
        then in ~2-2.8 s, and which mode a write meets changes within seconds. Each sample
        times dd, dd with the read and the mlpipe run one right after the other (after a
        sync, in a rotating order), and each row takes the best of BIG_SAMPLES: every
        measure in the disk's fast mode, the same floor for all (a median of bimodal
        samples compares luck)."""
        folder, _ = self.workload_dir("big")  # dd's folder; each run gets a workspace of its own
        free = shutil.disk_usage(folder).free
        if free < FREE_SPACE_NEEDED:
            self.log(f"skipping the 1 GiB workload: {free / GIB:.1f} GiB free in {folder}")
            return []
        dd_alone: list[float] = []
        dd_both: list[float] = []
        bare: list[float] = []
        runs: list[float] = []
        try:
            def mlpipe_once(sample: int) -> None:
                run_folder, run_env = self.workload_dir(f"big-{sample}")
                notebook = write_notebook(run_folder / "big.ipynb",
                                          big_output_pipeline(BIG_BLOCKS))
                os.sync()  # as before each dd
                runs.append(self.mlpipe_run(notebook, run_env))
                if sample == 0:
                    nonlocal used
                    used = disk_usage(run_folder / ".mlpipe")
                remove_tree(run_folder)  # the 1 GiB files go now, not at the end

            measures: list[Callable[[int], None]] = [
                lambda _: dd_alone.append(self.dd_once(folder)),
                lambda _: dd_both.append(self.dd_once(folder, read_back=True)),
                lambda _: bare.append(self.bare_once(folder)),
                mlpipe_once,
            ]
            used = 0
            for sample in range(BIG_SAMPLES):
                for index in range(len(measures)):
                    measures[(index + sample) % len(measures)](sample)
            dd, both, floor, elapsed = (min(values)
                                        for values in (dd_alone, dd_both, bare, runs))
            for label, values in (("dd 1 GiB with fsync", dd_alone),
                                  ("dd 1 GiB with fsync, then read back", dd_both),
                                  ("two bare python processes, write then read", bare),
                                  ("mlpipe 1 GiB output", runs)):
                self.log(f"{label} (best of {BIG_SAMPLES}): {min(values):.2f} s "
                         f"({', '.join(f'{value:.2f}' for value in values)})")
            self.log(f"workspace disk usage: {used / GIB:.2f} GiB")
        finally:
            remove_tree(folder)
        written = BIG_BLOCKS * MIB
        return [
            Row("1 GiB output written (1 MiB blocks + fsync), streamed by the next step",
                elapsed, f"{BIG_DD_FACTOR:g} × dd + {BIG_T} T", BIG_DD_FACTOR * dd + BIG_T * self.t,
                BIG_TARGET),
            Row("disk usage (du) of that workspace after the run", used / GIB,
                "bytes written: 1 GiB (a copy would make 2)", written / GIB, DU_TARGET, "GiB"),
            Row("[P] 1 GiB hand-over: the whole run (write, commit, read)", elapsed,
                "dd of 1 GiB with fsync", dd, FORK_HANDOVER_TARGET),
            # ours, beside the row: the floor that includes the read the second
            # step does (the floor holds the write alone)
            Row("1 GiB hand-over: the whole run, against the steps' own I/O done by dd",
                elapsed, "dd write (fsync) + dd read of 1 GiB", both, FORK_HANDOVER_TARGET),
            # for reference: the floor of any tool that runs the steps as processes on this
            # machine, against the baseline, and mlpipe against that floor
            Row("floor: the two steps' code as two bare `python -c`, one after the other",
                floor, "dd of 1 GiB with fsync", dd, None),
            Row("1 GiB hand-over: the whole run, against that floor", elapsed,
                "the two bare `python -c`", floor, None),
        ]

    def frame_handover(self) -> list[Row]:
        """Workloads 10 and 11: a 1 GiB DataFrame handed to the next step; a frame used by
        three steps stored once."""
        folder, env = self.workload_dir("handover")
        free = shutil.disk_usage(folder).free
        if free < FREE_SPACE_NEEDED:
            self.log(f"skipping the DataFrame hand-over: {free / GIB:.1f} GiB free in {folder}")
            return []
        try:
            script = HANDOVER_FLOOR.format(frame=frame_code(FRAME_ROWS))

            def floor_once(_: int) -> float:
                # every measurement starts with no dirty pages to flush: on these disks a
                # 1 GiB write right after another one is throttled to half its speed
                os.sync()
                return float(subprocess.run(
                    [sys.executable, "-c", script, str(folder / "floor.pkl")], check=True,
                    capture_output=True, text=True, env=self.base_env).stdout)

            floor = median_of(FRAME_FLOOR_SAMPLES, floor_once)
            (folder / "floor.pkl").unlink(missing_ok=True)
            self.log(f"save + load of the 1 GiB frame in one process (median): {floor:.2f} s")
            samples: dict[str, list[float]] = {"without": [], "with": []}
            for sample in range(HANDOVER_SAMPLES):  # alternating, so noise hits both alike
                for hand_over in (False, True):
                    name = "with" if hand_over else "without"
                    run_folder, run_env = self.workload_dir(f"handover-{name}-{sample}")
                    notebook = write_notebook(run_folder / "frame.ipynb",
                                              handover_pipeline(FRAME_ROWS, hand_over))
                    os.sync()
                    samples[name].append(self.mlpipe_run(notebook, run_env))
                    remove_tree(run_folder)
            timings = {name: statistics.median(values) for name, values in samples.items()}
            for name, values in samples.items():
                self.log(f"mlpipe 1 GiB frame, {name} hand-over (median): {timings[name]:.2f} s "
                         f"({', '.join(f'{v:.2f}' for v in values)})")
            shared_folder, shared_env = self.workload_dir("handover-shared")
            notebook = write_notebook(shared_folder / "shared.ipynb",
                                      shared_pipeline(SHARED_FRAME_ROWS, SHARED_CONSUMERS))
            self.mlpipe_run(notebook, shared_env)
            saved = disk_usage(shared_folder / ".mlpipe" / "results")
            self.log(f"saved variables, 3 consumers: {saved / MIB:.0f} MiB")
        finally:
            remove_tree(folder)
        cost = timings["with"] - timings["without"]
        frame_bytes = SHARED_FRAME_ROWS * FRAME_COLUMNS * 8
        return [
            Row(f"1 GiB DataFrame handed to the next step (--use; {timings['with']:.1f} s vs "
                f"{timings['without']:.1f} s without, medians of {HANDOVER_SAMPLES})", cost,
                "pickle save + load in one process", floor, HANDOVER_TARGET),
            Row(f"256 MiB DataFrame used by {SHARED_CONSUMERS} steps: bytes saved", saved / MIB,
                "the frame's size (stored once)", frame_bytes / MIB, SHARED_TARGET, "MiB"),
        ]

    def docker_overhead(self) -> list[Row]:
        """Workload 7: the chain with ``--compute docker`` against the same chain run locally,
        both cold in fresh workspaces; the difference per step is the containers' cost."""
        samples: dict[str, list[float]] = {"local": [], "docker": []}
        for sample in range(DOCKER_SAMPLES):  # interleaved: both see the same machine
            for compute in ("local", "docker"):
                folder, env = self.workload_dir(f"chain-{compute}-{sample}")
                notebook = write_notebook(folder / "chain.ipynb", chain_pipeline(CHAIN_STEPS))
                samples[compute].append(self.mlpipe_run(notebook, env, "--compute", compute))
        timings = {compute: statistics.median(values) for compute, values in samples.items()}
        for compute, values in samples.items():
            self.log(f"mlpipe chain on {compute} (median): {timings[compute]:.2f} s "
                     f"({', '.join(f'{v:.2f}' for v in values)})")
        self.log(f"the engine alone: a container running `true` costs "
                 f"{self.container_floor_cpu():.2f} s of CPU (create, start, wait, remove)")
        per_step = (timings["docker"] - timings["local"]) / CHAIN_STEPS
        return [
            Row(f"docker overhead per step, chain of {CHAIN_STEPS} (docker {timings['docker']:.1f} s"
                f" vs local {timings['local']:.1f} s)", per_step, "T", self.t,
                DOCKER_OVERHEAD_TARGET),
            Row(f"[P] docker chain of {CHAIN_STEPS}: time per step more than local", per_step,
                "P", self.p, FORK_DOCKER_TARGET),
        ]

    def container_floor_cpu(self, containers: int = 10) -> float:
        """The machine's CPU (all processes: engine, runtime, client) per container that
        runs ``true`` in the base image, from creation to removal: what any docker step
        pays before its own processes."""
        from mlpipe_jupyter.executors.docker.bootstrap import base_image_tag

        busy = _busy_cpu_seconds()
        for _ in range(containers):
            subprocess.run(["docker", "run", "--rm", "--init", "--network", "none",
                            base_image_tag(), "true"], check=True, capture_output=True)
        return (_busy_cpu_seconds() - busy) / containers

    def dask_fan_out(self) -> list[Row]:
        """Workload 8: the fan-out on a 2-worker local Dask cluster against the local
        executor at the same parallelism; the cluster is subprocesses on loopback."""
        _use_test_helpers()
        from tests.executors.dask_cluster import SubprocessCluster, WorkerSpec

        timings = {}
        cluster = SubprocessCluster(
            self.root / "dask-cluster", [WorkerSpec(f"w{i}") for i in range(DASK_WORKERS)]
        ).start()
        try:
            for compute in ("local", cluster.compute):
                kind = compute.split("://")[0]
                folder, env = self.cluster_workload_dir(f"fanout-{kind}")
                notebook = write_notebook(folder / "fanout.ipynb",
                                          fan_out_pipeline(FAN_OUT_STEPS, FAN_OUT_SLEEP))
                timings[kind] = self.mlpipe_run(notebook, env, "--compute", compute,
                                                "--max-parallel", str(DASK_WORKERS))
                self.log(f"mlpipe fan-out on {kind}: {timings[kind]:.2f} s")
        finally:
            cluster.stop()
        return [Row(
            f"fan-out of {FAN_OUT_STEPS} × sleep({FAN_OUT_SLEEP:g}) on a {DASK_WORKERS}-worker "
            f"dask cluster", timings["dask"],
            f"local, `--max-parallel {DASK_WORKERS}`", timings["local"], DASK_FAN_OUT_TARGET,
        )]

    def objstore_inputs(self) -> list[Row]:
        """Workload 9: steps reading one dataset from an S3 datastore, with the workers'
        input cache and without it (a cluster each, the same worker count)."""
        from moto.server import ThreadedMotoServer

        _use_test_helpers()
        from tests.conftest import environment, free_port
        from tests.executors.dask_cluster import SubprocessCluster, WorkerSpec

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        with contextlib.redirect_stdout(sys.stderr):  # its start-up line is not the report
            server.start()
        s3 = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
              "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        data = self.root / "objstore-data"
        data.mkdir()
        for index in range(OBJSTORE_FILES):
            (data / f"{index:05d}.bin").write_bytes(os.urandom(OBJSTORE_FILE_KIB << 10))
        timings = {}
        try:
            with environment(s3):
                import s3fs

                s3fs.S3FileSystem.clear_instance_cache()
                s3fs.S3FileSystem().mkdir("bench")
                for label, cache_gb in (("cache", "20"), ("no-cache", "0")):
                    workers = [WorkerSpec(f"w{i}", env={"MLPIPE_INPUT_CACHE_GB": cache_gb})
                               for i in range(DASK_WORKERS)]
                    cluster = SubprocessCluster(self.root / f"cluster-{label}", workers).start()
                    try:
                        timings[label] = self._objstore_run(label, cluster.address, data, s3)
                    finally:
                        cluster.stop()
                    self.log(f"mlpipe object-store inputs, {label}: {timings[label]:.2f} s")
        finally:
            server.stop()
        return [Row(
            f"{OBJSTORE_STEPS} steps read one dataset ({OBJSTORE_FILES} files of "
            f"{OBJSTORE_FILE_KIB} KiB) from an S3 datastore, {DASK_WORKERS} dask workers",
            timings["cache"],
            "the same without the workers' input cache", timings["no-cache"],
            OBJSTORE_CACHE_TARGET)]

    def _objstore_run(self, label: str, address: str, data: Path, s3: dict[str, str]) -> float:
        folder, env = self.cluster_workload_dir(f"objstore-{label}")
        env.update(s3)
        steps = [f"%%mlstep read{i} --input d=dataset:blob --output o --param i={i}\n"
                 f"total = sum(len(p.read_bytes()) for p in inputs.d.iterdir())\n"
                 f"(outputs.o / 'n').write_text(str(total))"
                 for i in range(OBJSTORE_STEPS)]
        notebook = write_notebook(folder / "objstore.ipynb", steps)
        for command in (["dataset", "register", "blob", str(data)],
                        ["compute", "add", "cl", "--dask", address, "--datastore",
                         f"s3://bench/{label}"]):
            run_timed([self.mlpipe, *command], folder, env)
        return self.mlpipe_run(notebook, env, "--compute", "cl",
                               "--max-parallel", str(DASK_WORKERS))

    def sweep(self) -> list[Row]:
        """Workload 12: a 4 x 2 sweep in one command against its 8 runs one by one."""
        sweep_folder, sweep_env = self.workload_dir("sweep")
        notebook = write_notebook(sweep_folder / "sweep.ipynb",
                                  sweep_pipeline(SWEEP_STEP_SECONDS))
        swept = self.mlpipe_run(notebook, sweep_env, "--sweep", f"C={','.join(SWEEP_C)}",
                                "--sweep", f"frac={','.join(SWEEP_FRAC)}")
        self.log(f"mlpipe 4 x 2 sweep: {swept:.2f} s")
        loop_folder, loop_env = self.workload_dir("sweep-loop")
        notebook = write_notebook(loop_folder / "sweep.ipynb", sweep_pipeline(SWEEP_STEP_SECONDS))
        separate = sum(self.mlpipe_run(notebook, loop_env, "-p", f"C={c}", "-p", f"frac={f}")
                       for c in SWEEP_C for f in SWEEP_FRAC)
        self.log(f"mlpipe, the 8 combinations as separate runs: {separate:.2f} s")
        members = len(SWEEP_C) * len(SWEEP_FRAC)
        return [Row(
            f"{len(SWEEP_C)} x {len(SWEEP_FRAC)} sweep of a 3-step notebook (steps sleep "
            f"{SWEEP_STEP_SECONDS:g} s; prepare shared per frac)", swept,
            f"the {members} combinations as {members} `mlpipe run`s", separate, SWEEP_TARGET)]

    def long_chain_noop(self) -> float:
        """The 100-step chain run once, then re-run with every step reused (median of 3)."""
        folder, env = self.workload_dir("long-chain")
        notebook = write_notebook(folder / "chain.ipynb", chain_pipeline(LONG_CHAIN_STEPS))
        cold = self.mlpipe_run(notebook, env)
        self.log(f"mlpipe chain of {LONG_CHAIN_STEPS}, cold: {cold:.2f} s")
        noop = median_of(RERUN_SAMPLES, lambda _: self.mlpipe_run(notebook, env))
        self.log(f"mlpipe chain of {LONG_CHAIN_STEPS}, no-op re-run (median): {noop:.2f} s")
        return noop

    def fork_rows(self) -> list[Row]:
        """Issue 18's local-execution targets, in P (after ``chain`` and ``fan_out``)."""
        times = self.chain_times
        long_noop = self.long_chain_noop()
        return [
            Row(f"[P] chain of {CHAIN_STEPS}, cold ({times['cold']:.2f} s)", times["cold"],
                f"P's papermill looped over the {CHAIN_STEPS} notebooks", times["lean_loop"],
                FORK_CHAIN_TARGET),
            Row(f"[P] edit the last step ({times['edit']:.2f} s) minus the no-op re-run "
                f"({times['noop']:.2f} s)", times["edit"] - times["noop"], "P", self.p,
                FORK_EDIT_TARGET),
            Row(f"[P] fan-out of {FAN_OUT_STEPS} × sleep({FAN_OUT_SLEEP:g}), `--max-parallel "
                f"{FAN_OUT_STEPS}` ({self.fan_out_time:.2f} s), minus {FAN_OUT_SLEEP:g} s",
                self.fan_out_time - FAN_OUT_SLEEP, "P", self.p, FORK_FAN_OUT_TARGET),
            Row(f"[P] no-op re-run of a {LONG_CHAIN_STEPS}-step chain (median of "
                f"{RERUN_SAMPLES})", long_noop, "P", self.p, LONG_NOOP_TARGET),
        ]

    def local_rows(self) -> list[Row]:
        """P, T and every row about local execution (``--only-local``)."""
        self.measure_p()
        self.measure_t()
        self.start_template()
        chain = self.chain()
        fan = self.fan_out()
        return [chain[0], *fan, chain[1], chain[2], *self.fork_rows()]

    def run(self) -> list[Row]:
        self.measure_p()
        self.measure_t()
        self.start_template()
        chain = self.chain()
        fan = self.fan_out()
        fork = self.fork_rows()
        big = self.big_output()
        frames = self.frame_handover()
        docker = self.docker_overhead() if self.with_docker else []
        dask = self.dask_fan_out() if self.with_dask else []
        objstore = self.objstore_inputs() if self.with_dask and _installed("s3fs", "moto") else []
        sweep = self.sweep()
        # report order: chain, fan-out, no-op, edit, 1 GiB, du, docker, dask, object store,
        # frame hand-over, frame stored once, sweep
        return [chain[0], *fan, chain[1], chain[2], *big, *docker, *dask, *objstore, *frames,
                *sweep, *fork]


def header(bench: Bench, load_before: float) -> str:
    """Date, machine, the commands timed and T."""
    return "\n".join([
        f"mlpipe benchmark, {datetime.now():%Y-%m-%d %H:%M:%S}",
        f"machine: {platform.node()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; 1-min load average {load_before:.2f} before the "
        "benchmark started (above ~0.5 on an idle machine means something else is running)",
        f"commands: {bench.mlpipe} / {bench.papermill}",
        f"T (papermill command, trivial one-cell notebook, median of {T_SAMPLES}): "
        f"{bench.t:.2f} s",
        f"P (the same with a lean environment's papermill: only papermill and ipykernel, "
        f"best of {P_SAMPLES}): {bench.p:.2f} s" if bench.p else "P: not measured",
        "",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when any target is missed (default: always exit 0)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print `mlpipe show latest` (per-step times) after each run")
    parser.add_argument("--no-docker", action="store_true",
                        help="skip the docker overhead row (needs a Docker engine and "
                        "`mlpipe image bootstrap`)")
    parser.add_argument("--no-dask", action="store_true",
                        help="skip the dask fan-out row (automatic when dask[distributed] "
                        "is not installed)")
    parser.add_argument("--only-dask", action="store_true",
                        help="measure T and the dask rows (8 and 9) only")
    parser.add_argument("--only-frames", action="store_true",
                        help="measure T and the DataFrame hand-over rows (10 and 11) only")
    parser.add_argument("--only-sweep", action="store_true",
                        help="measure T and the sweep row (12) only")
    parser.add_argument("--only-local", action="store_true",
                        help="measure P, T and the local-execution rows (1-4 and the [P] "
                        "rows) only")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to make the temporary folder (default: the system's)")
    return parser.parse_args(argv)


def _installed(*modules: str) -> bool:
    """Whether every one of ``modules`` can be imported here."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in modules)


def _use_test_helpers() -> None:
    """Make this checkout's ``tests`` package (the Dask cluster, free ports) importable."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="mlpipe-bench-", dir=args.workdir))
    bench: Bench | None = None
    try:
        bench = Bench(root, verbose=args.verbose, with_docker=not args.no_docker,
                      with_dask=not args.no_dask and _installed("distributed"))
        if args.only_frames:
            bench.measure_t()
            rows = bench.frame_handover()
        elif args.only_local:
            rows = bench.local_rows()
        elif args.only_sweep:
            bench.measure_t()
            rows = bench.sweep()
        elif args.only_dask:
            bench.measure_t()
            rows = bench.dask_fan_out() if bench.with_dask else []
            rows += bench.objstore_inputs() if bench.with_dask and _installed("s3fs", "moto") else []
        else:
            rows = bench.run()
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 2
    finally:
        if bench is not None:
            bench.stop_templates()
        remove_tree(root)
    print(header(bench, load_before))
    print(render_table(rows))
    targeted = [row for row in rows if row.target is not None]
    failed = [row for row in targeted if not row.passed]
    references = len(rows) - len(targeted)
    print(f"\n{len(targeted) - len(failed)}/{len(targeted)} targets met"
          + (f" ({references} reference row{'s' if references > 1 else ''})" if references else "")
          + f"; benchmark took {time.perf_counter() - started:.0f} s")
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
