"""The runner's side of an object-store datastore for Dask steps (see docs/dask.md).

Nothing is shared with the workers: before a step is submitted its inputs go up to the
datastore (content-addressed, so what is there already is never uploaded again); the
worker commits the step's outputs there as ``results/<result_id>/``; the runner downloads
them into the step's staging folder, or reuses a result another machine committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import ExecutorError, TargetUnavailableError
from mlpipe_jupyter.executors.base import StepTask
from mlpipe_jupyter.executors.dask import objstore


class RemoteDatastore:
    """An fsspec URL the runner and every worker can reach."""

    def __init__(self, url: str, workspace: Any = None) -> None:
        self.url = url
        self.workspace = workspace

    def probe(self) -> None:
        """Raise ExecutorError, saying what to do, when the datastore cannot be used."""
        bucket = ""
        try:
            fs, root = objstore.filesystem(self.url)
            bucket = root.split("/", 1)[0]
            fs.invalidate_cache()
            fs.ls(bucket)
        except ImportError as exc:
            raise ExecutorError(
                f"datastore {self.url}: the fsspec backend is missing ({exc}); "
                f"{objstore.install_hint(self.url)} on the runner and on "
                f"every worker") from None
        except FileNotFoundError:
            raise ExecutorError(
                f"datastore {self.url}: the bucket or container {bucket!r} "
                f"does not exist (or these credentials cannot see it); create it "
                f"first") from None
        except Exception as exc:
            raise TargetUnavailableError(f"datastore {self.url} is unreachable: "
                                f"{type(exc).__name__}: {exc}") from None

    def publish_inputs(self, task: StepTask) -> dict[str, Any]:
        """Upload the task's inputs that the datastore lacks; the worker's part of the spec.

        An upstream result goes to ``results/<result_id>/`` (all its outputs), any other
        folder (a dataset version) to ``data/<content hash>/``: content-addressed, so what is
        there already is never uploaded again."""
        if not task.result_id:
            raise ExecutorError("the step has no result id")
        fs, root = objstore.filesystem(self.url)
        results_dir = Path(self.workspace.results_dir).resolve() if self.workspace else None
        data_dir = Path(self.workspace.data_dir).resolve() if self.workspace else None
        inputs: dict[str, dict[str, str]] = {}
        for name, path in task.input_paths.items():
            path = Path(path)
            resolved = path.resolve()
            if results_dir is not None and resolved.is_relative_to(results_dir):
                result_id, output = resolved.relative_to(results_dir).parts[:2]
                folder, prefix = results_dir / result_id, f"results/{result_id}"
                inputs[name] = {"host": str(path), "prefix": f"{prefix}/{output}"}
            else:  # a dataset version: its folder in the workspace is named by its content
                digest = (resolved.name if data_dir is not None and resolved.parent == data_dir
                          else objstore.folder_hash(resolved))
                folder, prefix = resolved, f"data/{digest}"
                inputs[name] = {"host": str(path), "prefix": prefix}
            objstore.publish_folder(fs, folder, f"{root}/{prefix}",
                                    f"{root}/staging/{objstore.unique_suffix()}")
        return {
            "url": self.url, "result_id": task.result_id, "inputs": inputs,
            "metrics_path": str(task.step_notebook.parent / "metrics.jsonl"),
            "notebook_text": task.step_notebook.read_text(encoding="utf-8"),
        }

    def has_result(self, result_id: str | None) -> bool:
        """Whether the result is committed in the datastore (raises when it cannot tell)."""
        fs, root = objstore.filesystem(self.url)
        return objstore.is_committed(fs, f"{root}/results/{result_id}")

    def fetch_result(self, result_id: str, into: Path) -> bool:
        """Download a committed result (all its outputs) into ``into``; False when absent."""
        fs, root = objstore.filesystem(self.url)
        prefix = f"{root}/results/{result_id}"
        if not objstore.is_committed(fs, prefix):
            return False
        objstore.download_folder(fs, prefix, into)
        return True

    def download_outputs(self, task: StepTask) -> str | None:
        """Download the task's committed outputs into its staging folder; the problem, or
        None."""
        if task.staging is None:
            return None
        try:
            fs, root = objstore.filesystem(self.url)
            prefix = f"{root}/results/{task.result_id}"
            if not objstore.is_committed(fs, prefix):
                return f"the step's result is missing from the datastore ({prefix})"
            for output in sorted(p.name for p in task.staging.iterdir() if p.is_dir()):
                objstore.download_folder(fs, f"{prefix}/{output}", task.staging / output)
        except Exception as exc:
            return (f"could not download the step's result from the datastore: "
                    f"{type(exc).__name__}: {exc}")
        return None
