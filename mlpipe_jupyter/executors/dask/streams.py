"""Live logs and metrics for steps whose worker shares no folder with the runner.

With an object-store datastore a step writes its log and ``metrics.jsonl`` in a
worker-local folder. ``Tailer`` (on the worker) sends their new bytes as Dask structured
events on one topic; ``LiveLogs`` (in the runner's executor) appends them, in order,
to the step's files in the run folder, so ``mlpipe logs -f`` and the UI follow the step as
it runs. The texts the task returns stay the truth: ``LiveLogs.write_rest`` adds what no
event carried, and events that arrive after it are ignored.
"""

from __future__ import annotations

import codecs
import logging
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpipe_jupyter.executors.base import StepTask

log = logging.getLogger(__name__)

# How often the tailer looks for new bytes, the
# most it reads of a file at once (the rest waits for the next look, or for the result),
# and the most characters one event carries (at most 4 UTF-8 bytes each: <= 64 KiB).
STREAM_INTERVAL_SECONDS = 0.5
STREAM_READ_BYTES = 1 << 20
STREAM_CHUNK_CHARS = 16 * 1024


# One topic for every run: the scheduler keeps the last ``distributed.admin.
# low-level-log-length`` (1000) events of each topic, so a topic per run would leave up to
# 1000 events behind per run on a long-lived scheduler; one topic bounds it for all runs.
STREAM_TOPIC = "mlpipe-stream"


@dataclass
class _Stream:
    """What the worker's events have written to one submitted step's log and metrics file.

    ``written`` holds, per execution (the worker's stream key), the bytes appended from each
    file; only the newest execution's events are written (a lost worker's late ones are not).
    """

    task: StepTask
    written: dict[str, dict[str, int]] = field(default_factory=dict)
    current: str | None = None


class LiveLogs:
    """The runner's side: writes streamed text into each followed step's log and metrics.

    Keyed by (run id, step, attempt); the lock orders the event handler (on the Dask
    client's loop thread) and ``write_rest`` (on the future's callback thread).
    """

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str, int], _Stream] = {}
        self._lock = threading.Lock()
        self._subscribed = False

    def unsubscribe(self, client: Any) -> None:
        """Stop listening to the topic (when the executor closes)."""
        if self._subscribed:
            try:
                client.unsubscribe_topic(STREAM_TOPIC)
            except Exception:
                log.debug("unsubscribing from %s failed", STREAM_TOPIC, exc_info=True)
            self._subscribed = False

    def follow(self, client: Any, task: StepTask) -> None:
        """Write the events of the task's executions to its log and metrics file (the first
        call subscribes to the topic). Without it the texts arrive with the result."""
        with self._lock:
            self._streams[(task.run_id, task.step, task.attempt)] = _Stream(task)
            if self._subscribed:
                return
            self._subscribed = True
        try:
            client.subscribe_topic(STREAM_TOPIC, self.on_event)
        except Exception:
            log.debug("subscribing to %s failed; logs arrive when steps end", STREAM_TOPIC,
                      exc_info=True)

    def on_event(self, event: Any) -> None:
        """Append an event's text when it continues its stream exactly (on the client's loop
        thread): duplicates, overlaps and text after a gap are dropped; the returned text
        fills in later."""
        try:
            _, msg = event
            name, key = msg["file"], msg["key"]
            offset, data = int(msg["offset"]), msg["text"].encode("utf-8")
            with self._lock:
                stream = self._streams.get((msg["run_id"], msg["step"], int(msg["attempt"])))
                if stream is None or name not in ("log", "metrics"):
                    return  # the step ended (or is not ours): its result wrote the rest
                if key != stream.current:
                    if key in stream.written:
                        return  # an older execution of the step (a lost worker)
                    self._switch_stream(stream, key)
                written = stream.written[key][name]
                if not offset <= written < offset + len(data):
                    return
                with self._stream_path(stream.task, name).open("ab") as handle:
                    handle.write(data[written - offset:])
                stream.written[key][name] = offset + len(data)
        except Exception:
            log.debug("a live log event could not be written", exc_info=True)

    @staticmethod
    def _stream_path(task: StepTask, name: str) -> Path:
        return task.log_path if name == "log" else task.step_notebook.parent / "metrics.jsonl"

    def _switch_stream(self, stream: _Stream, key: str) -> None:
        """A new execution of the step streams (the scheduler re-ran it after a lost worker):
        its log follows the old one's, its metrics replace them."""
        if stream.current is not None and stream.written[stream.current]["metrics"]:
            self._stream_path(stream.task, "metrics").write_bytes(b"")
        stream.current = key
        stream.written[key] = {"log": 0, "metrics": 0}

    def write_rest(self, task: StepTask, result: dict[str, Any]) -> None:
        """Write the part of the returned log and metrics no event wrote, and end the stream:
        later events are ignored. The log only grows (earlier attempts stay); the metrics
        file ends up holding exactly the returned metrics."""
        with self._lock:
            stream = self._streams.pop((task.run_id, task.step, task.attempt), None)
            key = result.get("stream_key")
            written = (stream.written.get(key, {}) if stream is not None and key is not None
                       else {})
            log_bytes = (result.get("log_text") or "").encode("utf-8")
            if len(log_bytes) > written.get("log", 0):
                with task.log_path.open("ab") as handle:
                    handle.write(log_bytes[written.get("log", 0):])
            metrics = self._stream_path(task, "metrics")
            metrics_bytes = (result.get("metrics_text") or "").encode("utf-8")
            if stream is not None and key is not None and key == stream.current:
                if len(metrics_bytes) > written["metrics"]:
                    with metrics.open("ab") as handle:
                        handle.write(metrics_bytes[written["metrics"]:])
            elif metrics_bytes or metrics.exists():
                metrics.write_bytes(metrics_bytes)

    def end(self, task: StepTask) -> None:
        """Forget a step that ended without a result (lost, canceled): keep what it streamed."""
        with self._lock:
            self._streams.pop((task.run_id, task.step, task.attempt), None)


class Tailer(threading.Thread):
    """Sends what a step appends to its worker-local files to the runner, as Dask events.

    Every ``STREAM_INTERVAL_SECONDS`` (and once more in ``finish``) the new bytes of each
    file go out as ``{"run_id", "step", "attempt", "key", "file", "offset", "text"}`` on
    ``STREAM_TOPIC``; ``key`` names this execution (a lost worker's re-run is
    another stream) and ``offset`` counts the UTF-8 bytes of the text sent before. Best
    effort: the texts the task returns are the truth, the runner adds what no event carried.
    """

    def __init__(self, spec: dict[str, Any], files: dict[str, Path]) -> None:
        super().__init__(daemon=True, name="mlpipe-dask-stream")
        from distributed import get_worker

        self._worker = get_worker()  # only found from the task's thread; raises off a worker
        self.key = f"{spec['run_id']}/{spec['step']}/{spec['attempt']}/{uuid.uuid4().hex}"
        self._base = {"run_id": spec["run_id"], "step": spec["step"],
                      "attempt": spec["attempt"], "key": self.key}
        self._files = files
        self._read = dict.fromkeys(files, 0)  # bytes of each file consumed
        self._sent = dict.fromkeys(files, 0)  # UTF-8 bytes of text sent: the next offset
        self._decoders = {name: codecs.getincrementaldecoder("utf-8")("replace")
                          for name in files}
        self._halt = threading.Event()
        self._broken = False

    def run(self) -> None:
        while not self._halt.wait(STREAM_INTERVAL_SECONDS):
            self._send_new(final=False)

    def finish(self) -> None:
        """Stop, then send what the files gained since the last look."""
        self._halt.set()
        self.join(timeout=10)
        if not self.is_alive():
            self._send_new(final=True)

    def _send_new(self, final: bool) -> None:
        for name, path in self._files.items():
            try:
                with path.open("rb") as handle:
                    handle.seek(self._read[name])
                    data = handle.read(STREAM_READ_BYTES)
            except OSError:  # not created yet
                continue
            self._read[name] += len(data)
            # decoded exactly as the returned text is (bytes.decode(errors="replace"))
            at_end = final and len(data) < STREAM_READ_BYTES
            text = self._decoders[name].decode(data, final=at_end)
            for start in range(0, len(text), STREAM_CHUNK_CHARS):
                if self._broken:
                    return
                piece = text[start:start + STREAM_CHUNK_CHARS]
                try:
                    self._worker.log_event(STREAM_TOPIC, {**self._base, "file": name,
                                                         "offset": self._sent[name],
                                                         "text": piece})
                except Exception:  # the worker is closing: the result carries the text
                    log.debug("streaming the step's %s failed", name, exc_info=True)
                    self._broken = True
                    return
                self._sent[name] += len(piece.encode("utf-8"))


def start_tailer(spec: dict[str, Any], files: dict[str, Path]) -> Tailer | None:
    """A running ``Tailer``, or None off a Dask worker (the texts come with the result)."""
    try:
        tailer = Tailer(spec, files)
    except Exception:
        log.debug("no live log: not on a dask worker", exc_info=True)
        return None
    tailer.start()
    return tailer
