"""Live progress of a run on the terminal, fed by run events."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TextIO

from mlpipe_jupyter.events import RUN_FINISHED, RUN_STARTED, STEP_STATUS, RunEvent

SYMBOLS = {
    "queued": "·", "running": "▶", "succeeded": "✓", "failed": "✗",
    "reused": "↺", "skipped": "-", "canceled": "■",
}


class ProgressPrinter:
    """One line per state change, with a counter; works in terminals and CI logs alike."""

    def __init__(self, stream: TextIO | None = None, verbose: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.verbose = verbose
        self.total = 0
        self.width = 8
        self.done: set[str] = set()
        self.started: dict[str, float] = {}
        self.t0 = time.time()
        self._reader_gone = False  # stdout is a pipe whose reader exited

    def __call__(self, event: RunEvent) -> None:
        if event.kind == RUN_STARTED:
            steps = event.detail.get("steps", [])
            self.total = len(steps)
            self.width = max([8, *map(len, steps)])
            self._print(f"run {event.run_id}: {event.detail.get('notebook')} "
                        f"({self.total} steps)")
            for step, notes in event.detail.get("unapplied", {}).items():
                self._print(f"  note: {step}: {'; '.join(notes)}")
        elif event.kind == STEP_STATUS and event.step:
            self._step(event)
        elif event.kind == RUN_FINISHED:
            elapsed = time.time() - self.t0
            self._print(f"run {event.run_id} {event.status} in {elapsed:.1f}s")

    def _step(self, event: RunEvent) -> None:
        status, step = event.status, event.step or ""
        if status == "queued" and not self.verbose and not event.detail.get("error"):
            return
        if status == "running":
            self.started[step] = event.at
        if status not in ("queued", "running"):
            self.done.add(step)
        extra = ""
        started = event.detail.get("started_at") or self.started.get(step)
        if status in ("succeeded", "failed") and started:
            # the executor's start: the time a step took, not its wait for a kernel
            extra = f" {event.detail.get('ended_at', event.at) - started:.1f}s"
        if status == "reused":
            extra = f" (result of run {event.detail.get('reused_from') or '?'})"
        if status == "queued" and event.detail.get("error"):
            extra = " (retrying)"
        if status == "skipped" and event.detail.get("error"):
            extra = f" ({event.detail['error']})"
        if status == "skipped" and event.detail.get("reason") == "not selected for this run":
            extra = " (not selected)"
        counter = f"[{len(self.done)}/{self.total}]"
        symbol = SYMBOLS.get(status, "?")
        self._print(f"  {counter:>7} {symbol} {step:<{self.width}} {status}{extra}")

    def _print(self, text: str) -> None:
        if self._reader_gone:
            return
        try:
            print(text, file=self.stream, flush=True)
        except BrokenPipeError:
            # `mlpipe run ... | head`: the reader went away, the run goes on quietly; the
            # stream points at /dev/null so that later writes and the final flush succeed
            self._reader_gone = True
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())


class SweepProgressPrinter(ProgressPrinter):
    """A sweep's progress: each step a member executes, and each member as it ends, with
    the count of members done. Steps reused from another member are not listed."""

    def __init__(self, members: int, title: str, stream: TextIO | None = None,
                 verbose: bool = False) -> None:
        super().__init__(stream, verbose)
        self.members = members
        self.title = title  # printed when the first member starts: the sweep is valid
        self.finished = 0
        self.executed: dict[str, int] = {}  # run id -> steps it executed
        self.reused: dict[str, int] = {}  # run id -> steps it reused

    def __call__(self, event: RunEvent) -> None:
        member = event.run_id.rsplit("-", 1)[-1]  # "m003"
        if event.kind == RUN_STARTED and self.title:
            self._print(self.title)
            self.title = ""
        elif event.kind == STEP_STATUS and event.step:
            if event.status == "reused":
                self.reused[event.run_id] = self.reused.get(event.run_id, 0) + 1
            if event.status in ("running", "succeeded", "failed") or (
                    self.verbose and event.status == "reused"):
                if event.status == "succeeded":
                    self.executed[event.run_id] = self.executed.get(event.run_id, 0) + 1
                self.width = max(self.width, len(event.step))
                self._step_line(member, event)
        elif event.kind == RUN_FINISHED:
            self.finished += 1
            counter = f"[{self.finished}/{self.members}]"
            symbol = SYMBOLS.get(event.status, "?")
            self._print(f"  {counter:>9} {symbol} {member} ({event.run_id}) {event.status}: "
                        f"{self.executed.get(event.run_id, 0)} executed, "
                        f"{self.reused.get(event.run_id, 0)} reused")

    def _step_line(self, member: str, event: RunEvent) -> None:
        extra = ""
        started = event.detail.get("started_at") or self.started.get(event.run_id + (event.step or ""))
        if event.status == "running":
            self.started[event.run_id + (event.step or "")] = event.at
        elif event.status in ("succeeded", "failed") and started:
            extra = f" {event.detail.get('ended_at', event.at) - started:.1f}s"
        symbol = SYMBOLS.get(event.status, "?")
        self._print(f"  {'':>9} {symbol} {member} {event.step:<{self.width}} "
                    f"{event.status}{extra}")
