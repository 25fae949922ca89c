"""A Kale notebook through the real ``mlpipe`` command: check, run (real kernels), show."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.kale.helpers import kale_notebook


def three_steps(path: Path) -> Path:
    """Three steps that hand files over through a folder (no variable passing)."""
    return kale_notebook(path, [
        ("from pathlib import Path", ["imports"]),
        ("folder = 'shared'\ncount = 4", ["pipeline-parameters"]),
        ("Path(folder).mkdir(exist_ok=True)\n"
         "Path(folder, 'numbers.txt').write_text(' '.join(str(i) for i in range(count)))",
         ["step:produce"]),
        "%env KALE_DEMO=1\n!echo shell escape",  # magics in an untagged cell that joins produce
        ("numbers = [int(v) for v in Path(folder, 'numbers.txt').read_text().split()]\n"
         "Path(folder, 'total.txt').write_text(str(sum(numbers)))",
         ["step:add", "prev:produce"]),
        ("total = int(Path(folder, 'total.txt').read_text())\nprint('total is', total)",
         ["step:report", "prev:add", "label:stage:final"]),
        ("print(total)", ["pipeline-metrics"]),
    ], kale={"experiment_name": "kale-demo"})


def test_check_prints_the_steps(tmp_path: Path) -> None:
    notebook = three_steps(tmp_path / "demo.ipynb")
    done = run_cli("check", str(notebook), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "demo.ipynb (Kale tags): 3 steps, 1 setup cells, OK" in out
    assert "experiment: kale-demo" in out
    assert "0: produce (cell 3) after: -" in out
    assert "1: add (cell 5) after: produce" in out
    assert "2: report (cell 6) after: add" in out
    assert "labels: stage=final" in out
    assert "parameters: folder=shared, count=4" in out


def test_check_reports_every_tag_mistake(tmp_path: Path) -> None:
    notebook = kale_notebook(tmp_path / "bad.ipynb", [
        ("x = 1", ["step:a", "prev:b"]),
        ("y = 1", ["step:b", "limit:cpu:many"]),
    ])
    done = run_cli("check", str(notebook), cwd=tmp_path)
    assert done.returncode == 2
    assert "2 pipeline definition errors" in done.stderr
    assert "cell 1, step 'a', tag 'prev:b': prev: names step 'b'" in done.stderr
    assert "cell 2, step 'b', tag 'limit:cpu:many'" in done.stderr


@pytest.mark.slow
def test_run_a_kale_notebook_and_see_its_metric(workspace_dir: Path) -> None:
    notebook = three_steps(workspace_dir / "demo.ipynb")
    done = run_cli("run", str(notebook), "-p", "count=5", cwd=workspace_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("✓ produce", "✓ add", "✓ report", "succeeded in"):
        assert line in done.stdout
    assert (workspace_dir / "shared" / "total.txt").read_text() == "10"
    show = run_cli("show", "latest", cwd=workspace_dir).stdout
    assert "total=10" in show
    assert "experiment: kale-demo" in show
    assert "count=5" in show
    assert "total is 10" in run_cli("logs", "latest", "report", cwd=workspace_dir).stdout
