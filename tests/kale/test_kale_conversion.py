"""``mlpipe convert``: a Kale notebook written as %%mlstep cells means the same pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlpipe_jupyter.conversion import convert
from mlpipe_jupyter.errors import DefinitionError, NotebookError
from mlpipe_jupyter.model.pipeline import KALE, MLSTEP
from mlpipe_jupyter.notebook import load_pipeline
from tests.conftest import run_cli
from tests.kale.helpers import kale_notebook

KALE_METADATA = {
    "experiment_name": "churn", "docker_image": "base:1", "pipeline_name": "p",
    "steps_defaults": ["label:team:ml", "annotation:note:a b:c"],
}


def rich_notebook(path: Path) -> Path:
    return kale_notebook(path, [
        ("import os", ["imports"]),
        "%matplotlib inline",
        ("def helper(v):\n    return v * scale", ["functions"]),
        ("lr = 0.1\nscale = 2\nname = \"it's ✓\"\nshape = (1, [2, {'k': None}])\nflag = True\n"
         "unused = 'u'", ["pipeline-parameters"]),
        ("data = [1, 2, 3]\nprint(name, shape)", ["step:load", "limit:cpu:500m",
                                                  "limit:memory:1Gi", "limit:gpu:1"]),
        "more = len(data)",
        ("model = [v * lr for v in data] if flag else []", ["step:train", "prev:load",
                                                            "cache:disabled", "image:gpu:2",
                                                            "limit:ephemeral-storage:5Gi"]),
        ("score = helper(1)", ["step:evaluate", "prev:train", "label:stage:eval=1"]),
        ("acc = 0.9", ["step:side", "prev:load"]),
        ("print(acc)\nscore", ["pipeline-metrics"]),
    ], kale=KALE_METADATA, markdown={0: "# Title", 4: "## Load\ntext", 9: "## Metrics"})


def test_round_trip_same_pipeline(tmp_path: Path) -> None:
    source = rich_notebook(tmp_path / "kale.ipynb")
    original = load_pipeline(source)
    assert original.kind == KALE and original.definition_issues() == []
    converted = convert(source, tmp_path / "out" / "converted.ipynb")
    again = load_pipeline(tmp_path / "out" / "converted.ipynb")
    assert again.kind == MLSTEP and again.definition_issues() == []
    assert again.step_names == original.step_names
    for step in original.steps:
        other = again.step(step.name)
        assert other.code == step.code
        assert other.header.params == step.header.params
        assert again.upstream(step.name) == original.upstream(step.name)
        for attr in ("image", "resources", "allow_reuse", "labels", "annotations"):
            assert getattr(other.header, attr) == getattr(step.header, attr), attr
    assert [cell.code for cell in again.setup] == [cell.code for cell in original.setup]
    assert converted.step_names == original.step_names
    # parameters: those the steps use, with their defaults and types
    params = again.parameters()
    assert params == {k: v for k, v in original.parameters().items() if k != "unused"}
    assert isinstance(params["shape"], tuple)


def test_converted_notebook_layout(tmp_path: Path) -> None:
    source = rich_notebook(tmp_path / "kale.ipynb")
    convert(source, tmp_path / "converted.ipynb")
    notebook = json.loads((tmp_path / "converted.ipynb").read_text())
    assert "kubeflow_notebook" not in notebook["metadata"]
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    kinds = [(c["cell_type"], "".join(c["source"]).splitlines()[0]) for c in notebook["cells"]]
    assert [k for k, _ in kinds] == ["markdown", "markdown", "code", "code", "code", "markdown",
                                     "code", "code", "code", "code", "markdown"]
    note = "".join(notebook["cells"][0]["source"])
    assert "Kale experiment: `churn`" in note
    assert "unused = 'u'" in note
    assert "step `train`: `ephemeral-storage` = `5Gi`" in note
    lines = [first for kind, first in kinds if kind == "code"]
    assert lines[:3] == ["%%mlsetup"] * 3
    assert lines[3] == ("%%mlstep load --param 'name=\"it'\"'\"'s ✓\"' --param "
                        "\"shape=(1, [2, {'k': None}])\" --image base:1 --cpus 0.5 "
                        "--memory 1073741824 --gpus 1 --label team=ml --annotation "
                        "'note=a b:c'")
    assert lines[4] == ("%%mlstep train --use load.data --param lr=0.1 --param flag=True "
                        "--image gpu:2 --no-reuse --label team=ml --annotation 'note=a b:c'")
    assert lines[5].startswith("%%mlstep evaluate --after train --param scale=2 ")
    assert "--label stage=eval=1" in lines[5]


def test_convert_refuses(tmp_path: Path) -> None:
    source = rich_notebook(tmp_path / "kale.ipynb")
    out = tmp_path / "out.ipynb"
    out.write_text("keep me")
    with pytest.raises(NotebookError, match="exists: give --force"):
        convert(source, out)
    assert out.read_text() == "keep me"
    convert(source, out, force=True)
    with pytest.raises(NotebookError, match="already a %%mlstep notebook: nothing to convert"):
        convert(out, tmp_path / "again.ipynb")
    bad = kale_notebook(tmp_path / "bad.ipynb", [("x = 1", ["step:a", "prev:nope"])])
    with pytest.raises(DefinitionError, match="prev: names step 'nope'"):
        convert(bad, tmp_path / "bad-out.ipynb")
    assert not (tmp_path / "bad-out.ipynb").exists()


def test_convert_cli(tmp_path: Path) -> None:
    source = rich_notebook(tmp_path / "kale.ipynb")
    done = run_cli("convert", str(source), "-o", str(tmp_path / "c.ipynb"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "4 %%mlstep cells (load, train, evaluate, side)" in done.stdout
    done = run_cli("convert", str(source), "-o", str(tmp_path / "c.ipynb"), cwd=tmp_path)
    assert done.returncode == 2 and "exists: give --force to overwrite it" in done.stderr
    done = run_cli("convert", str(source), "-o", str(tmp_path / "c.ipynb"), "--force",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = run_cli("convert", str(tmp_path / "c.ipynb"), "-o", str(tmp_path / "d.ipynb"),
                   cwd=tmp_path)
    assert done.returncode == 2 and "already a %%mlstep notebook" in done.stderr
    assert "--force" in run_cli("convert", "--help").stdout
