"""What a step sees while it runs: ``from mlpipe_jupyter import context``.

The step notebook's injected cell calls ``activate(...)`` with the step's inputs, outputs,
parameters and ids; ``context`` (a proxy exported by the package) then answers for it.
Nothing here imports the runner or the store: a step may run on a machine without them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import MlpipeError

_PathBase = type(Path())  # PosixPath or WindowsPath: Path itself cannot be subclassed on 3.11


class InputPath(_PathBase):  # type: ignore[valid-type,misc]
    """The folder (or file) of an input; ``.to_pandas()`` reads its CSV/Parquet files."""

    def to_pandas(self):  # type: ignore[no-untyped-def]
        from mlpipe_jupyter.tabular import read_tabular_folder

        return read_tabular_folder(Path(self), what=f"input folder {self}")


class Folders(Mapping[str, Path]):
    """Named folders, by attribute (``inputs.raw``) or by key (``inputs["raw"]``). An input
    whose upstream step did not succeed is None (only a --run-if step runs without one)."""

    def __init__(self, kind: str, paths: Mapping[str, Path | None]) -> None:
        self._kind = kind
        self._paths: dict[str, Any] = dict(paths)

    def __getattr__(self, name: str) -> Path:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Path:
        try:
            return self._paths[name]
        except KeyError:
            known = ", ".join(self._paths) or "none"
            raise AttributeError(
                f"this step has no {self._kind} {name!r} (its {self._kind}s: {known}); "
                f"declare it in the %%mlstep line with --{self._kind} {name}..."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __dir__(self) -> list[str]:
        return list(self._paths)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={str(v)!r}" for k, v in self._paths.items())
        return f"{self._kind}s({items})"


class StepContext:
    """The running step: its inputs, outputs, parameters, ids, and a metrics log."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.run_id: str = spec.get("run_id", "")
        self.step: str = spec.get("step", "")
        self.notebook: str = spec.get("notebook", "")
        self.parameters: dict[str, Any] = dict(spec.get("parameters", {}))
        self.interactive: bool = bool(spec.get("interactive", False))
        # an input whose upstream step did not succeed (a --run-if all_done or any_failed
        # step runs without it) is None: ``if inputs.model is None: ...``
        self.inputs = Folders(
            "input", {k: InputPath(v["path"]) if v.get("path") is not None else None
                      for k, v in spec.get("inputs", {}).items()}
        )
        self.missing_inputs: dict[str, str] = {
            k: v["missing"] for k, v in spec.get("inputs", {}).items() if v.get("missing")
        }
        self.outputs = Folders("output", {k: Path(v) for k, v in spec.get("outputs", {}).items()})
        self.input_sources: dict[str, str] = {
            k: v.get("source", "") for k, v in spec.get("inputs", {}).items()
        }
        metrics = spec.get("metrics_path")
        self._metrics_path = Path(metrics) if metrics else None
        self.metrics: dict[str, Any] = {}

    def log(self, name: str, value: Any) -> None:
        """Record a metric with the step run (numbers, strings, lists: anything JSON can hold).

        Logged again under the same name, a metric keeps every value (a series)."""
        if not isinstance(name, str) or not name:
            raise ValueError("a metric needs a non-empty name")
        try:
            line = json.dumps({"name": name, "value": value, "at": time.time()})
        except TypeError:
            raise ValueError(f"metric {name!r}: {value!r} cannot be stored as JSON") from None
        self.metrics[name] = value
        if self._metrics_path is not None:
            with self._metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    def __repr__(self) -> str:
        return f"<step {self.step!r} of run {self.run_id!r}: {self.inputs!r}, {self.outputs!r}>"


_active: StepContext | None = None


def activate(spec: Mapping[str, Any]) -> StepContext:
    """Make ``spec`` the current step's context (called by the injected cell)."""
    global _active
    _active = StepContext(spec)
    return _active


def current() -> StepContext:
    if _active is None:
        raise MlpipeError(
            "no step is running here: `context` is available inside a step run by "
            "`mlpipe run`, or in a %%mlstep cell"
        )
    return _active


class ContextProxy:
    """``mlpipe_jupyter.context``: forwards to the step that is running now."""

    def __getattr__(self, name: str) -> Any:
        return getattr(current(), name)

    def __repr__(self) -> str:
        return repr(_active) if _active is not None else "<no step is running>"


def log(name: str, value: Any) -> None:
    """``mlpipe_jupyter.log(name, value)``: record a metric for the running step."""
    current().log(name, value)
