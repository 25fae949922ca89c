"""The magics inside a real ipykernel, driven like JupyterLab drives it (over ZMQ)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from mlpipe_jupyter.store import Store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class Kernel:
    """A started kernel and a helper that runs one cell and collects what it sent."""

    def __init__(self, manager: KernelManager) -> None:
        self.manager = manager
        self.client = manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 120) -> dict[str, Any]:
        outputs: list[dict[str, Any]] = []
        reply = self.client.execute_interactive(
            code, timeout=timeout, output_hook=outputs.append, allow_stdin=False
        )
        text = "".join(m["content"].get("text", "") for m in outputs
                       if m["msg_type"] == "stream")
        data = [m["content"]["data"] for m in outputs
                if m["msg_type"] in ("display_data", "execute_result")]
        errors = [m["content"] for m in outputs if m["msg_type"] == "error"]
        return {"status": reply["content"]["status"], "text": text, "data": data,
                "errors": errors, "reply": reply["content"]}

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel(store: Store, tmp_path: Path, write_notebook: Any) -> Any:
    notebook = write_notebook(tmp_path / "pipe.ipynb", [
        "%load_ext mlpipe_jupyter",
        "%%mlstep prepare --input raw=dataset:numbers --output clean\n"
        "import shutil\nshutil.copy(inputs.raw / 'numbers.csv', outputs.clean)\n",
        "%%mlstep count --input data=prepare.clean --output report\n"
        "n = len((inputs.data / 'numbers.csv').read_text().splitlines())\n"
        "(outputs.report / 'n.txt').write_text(str(n))\nn\n",
    ])
    env = {**os.environ, "PYTHONPATH": str(REPO), "JPY_SESSION_NAME": notebook.name}
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path), env=env)
    started = Kernel(manager)
    yield started
    started.stop()


def test_magics_in_a_real_kernel(kernel: Any, tmp_path: Path, store: Store) -> None:
    assert kernel.run("%load_ext mlpipe_jupyter")["status"] == "ok"
    step = (
        "%%mlstep prepare --input raw=dataset:numbers --output clean\n"
        "import shutil\nshutil.copy(inputs.raw / 'numbers.csv', outputs.clean)\n"
        "print('copied')\nsorted(p.name for p in outputs.clean.iterdir())\n"
    )
    ran = kernel.run(step)
    assert ran["status"] == "ok", ran["errors"]
    assert "copied" in ran["text"]
    assert any("['numbers.csv']" in d.get("text/plain", "") for d in ran["data"])

    bad = kernel.run("%%mlstep prepare --input raw=dataset:nope\npass\n")
    assert bad["status"] == "error"
    assert bad["reply"]["ename"] == "UsageError"
    assert "no dataset named 'nope'" in bad["reply"]["evalue"]

    run = kernel.run("%mlpipe run --wait")
    assert run["status"] == "ok", run["errors"]
    assert f"running the saved notebook {tmp_path / 'pipe.ipynb'}" in run["text"]
    assert any(WIDGET_MIME in d for d in run["data"]), run["data"]
    assert "succeeded in" in run["text"]
    latest = store.runs.get_run("latest")
    assert latest.status.value == "succeeded" and latest.notebook == str(tmp_path / "pipe.ipynb")

    # the committed result of `prepare` now feeds an interactive `count` cell
    count = kernel.run(
        "%%mlstep count --input data=prepare.clean --output report\n"
        "len((inputs.data / 'numbers.csv').read_text().splitlines())\n"
    )
    assert count["status"] == "ok", count["errors"]
    assert any(d.get("text/plain") == "4" for d in count["data"])
