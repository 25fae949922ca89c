"""Kale's cell tags read as a pipeline: every tag and rule, and every mistake at once."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.errors import DefinitionError
from mlpipe_jupyter.kale import parse_quantity
from mlpipe_jupyter.model.pipeline import KALE, MLSTEP, Pipeline
from mlpipe_jupyter.model.step import Resources
from mlpipe_jupyter.notebook import load_pipeline
from tests.kale.helpers import Cell, kale_notebook


def load(tmp_path: Path, cells: Sequence[Cell], kale: dict[str, Any] | None = None) -> Pipeline:
    return load_pipeline(kale_notebook(tmp_path / "kale.ipynb", cells, kale))


def issues(pipeline: Pipeline) -> list[str]:
    return [str(issue) for issue in pipeline.definition_issues()]


def test_steps_merging_skip_and_block(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        "print('before any tag: not part of the pipeline')",
        ("a = 1", ["step:load"]),
        "b = 2",                              # joins load
        ("junk = 0", ["skip"]),               # left out
        "c = 3",                              # joins load: skip is not a block
        ("d = a", ["block:train", "prev:load"]),  # legacy block: is step:
        ("e = 5", ["step:load"]),             # a second cell of load
        "f = 6",                              # joins load again
    ])
    assert pipeline.kind == KALE
    assert pipeline.step_names == ["load", "train"]
    load_step = pipeline.step("load")
    assert load_step.code == "a = 1\nb = 2\nc = 3\ne = 5\nf = 6"
    assert load_step.cell == 2
    assert pipeline.step("train").code == "d = a"
    assert pipeline.step("train").cell == 6
    assert pipeline.upstream("train") == {"load"}
    assert pipeline.upstream("load") == set()
    assert issues(pipeline) == []


def test_imports_and_functions_are_setup_cells_imports_first(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        ("def helper():\n    return 1", ["functions"]),
        "def other():\n    return 2",          # joins functions
        ("import os", ["imports"]),
        "%matplotlib inline\n!pip --version",   # joins imports; magics are kept as they are
        ("x = helper()", ["step:a"]),
    ])
    assert [cell.code for cell in pipeline.setup] == [
        "import os", "%matplotlib inline\n!pip --version",
        "def helper():\n    return 1", "def other():\n    return 2",
    ]
    assert [cell.cell for cell in pipeline.setup] == [3, 4, 1, 2]
    assert pipeline.step("a").code == "x = helper()"


def test_pipeline_parameters_of_every_literal_type(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        ("flag = True\nnothing = None\nname = 'héllo ✓'\nnested = {'a': [1, (2, 3)], 4: {5}}\n"
         "pair = (1, 'x')\nrate = 1e-3\ncount = 10\nbig = 10**0 if False else 12345678901234567890",
         ["pipeline-parameters"]),
        "rate = 0.5",  # joins the parameters cell; a later assignment wins
        ("x = 1", ["step:a"]),
    ])
    # `big` is an expression: an error (below); the rest are declared in order
    assert dict(pipeline.declared_parameters) == {
        "flag": True, "nothing": None, "name": "héllo ✓",
        "nested": {"a": [1, (2, 3)], 4: {5}}, "pair": (1, "x"), "rate": 0.5, "count": 10,
    }
    assert [n for n, _ in pipeline.declared_parameters][:3] == ["flag", "nothing", "name"]
    assert isinstance(dict(pipeline.declared_parameters)["pair"], tuple)
    [problem] = pipeline.parse_issues
    assert problem.cell == 1 and problem.field == "tag 'pipeline-parameters', line 8"
    assert "must be a Python literal" in problem.message


def test_parameters_go_to_the_steps_that_use_them(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        ("def scaled(x):\n    return x * scale", ["functions"]),
        ("lr = 0.1\nscale = 2\nunused = 'u'\nepochs = 3", ["pipeline-parameters"]),
        ("data = [1, 2]", ["step:load"]),
        ("model = [v * lr for v in data]\nprint(epochs)", ["step:train", "prev:load"]),
        ("out = scaled(1)", ["step:report", "prev:train"]),
    ])
    assert pipeline.step("load").header.params == ()
    assert pipeline.step("train").header.params == (("lr", 0.1), ("epochs", 3))
    # a setup function that reads a parameter: the steps that call it get it
    assert pipeline.step("report").header.params == (("scale", 2),)
    assert pipeline.parameters() == {"lr": 0.1, "scale": 2, "unused": "u", "epochs": 3}


def test_parameters_cell_accepts_only_literal_assignments(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        ("a = 1\nprint(a)\nb = compute()\nc, d = 1, 2\ninputs = 3", ["pipeline-parameters"]),
        ("x = a", ["step:s"]),
    ])
    found = [(i.cell, i.field, i.message) for i in pipeline.parse_issues]
    assert [(cell, field) for cell, field, _ in found] == [
        (1, "tag 'pipeline-parameters', line 2"), (1, "tag 'pipeline-parameters', line 3"),
        (1, "tag 'pipeline-parameters', line 4"), (1, "tag 'pipeline-parameters', line 5"),
    ]
    assert "'print(a)': a pipeline-parameters cell holds only NAME = <Python literal>" in found[0][2]
    assert "'b = compute()'" in found[1][2] and "not an expression" in found[1][2]
    assert "reserved" in found[3][2]
    assert pipeline.declared_parameters == (("a", 1),)


def test_metrics_are_logged_by_the_last_step_that_defines_them(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        ("acc = 0.5\nloss = 1.0", ["step:train"]),
        ("acc = 0.9", ["step:evaluate", "prev:train"]),
        ("def f():\n    loss = 3\nfor size in [1, 2]:\n    pass", ["step:other", "prev:train"]),
        ("print(acc)\nloss  # the train step's\n\nprint(size)", ["pipeline-metrics"]),
    ])
    assert pipeline.step("evaluate").code == (
        'acc = 0.9\nimport mlpipe_jupyter as _mlpipe_metrics\n_mlpipe_metrics.log("acc", acc)')
    # `loss` is bound in other only inside a function: train defines it
    assert pipeline.step("train").code.endswith('_mlpipe_metrics.log("loss", loss)')
    assert pipeline.step("other").code.endswith('_mlpipe_metrics.log("size", size)')
    assert issues(pipeline) == []


def test_metric_errors(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        ("acc = 1", ["step:train"]),
        ("print(nowhere)\nprint(acc, 2)\nacc + 1", ["pipeline-metrics"]),
        ("x = 1", ["step:late"]),
    ])
    found = issues(pipeline)
    assert len(found) == 4, found
    assert "cell 2, tag 'pipeline-metrics': metric 'nowhere': no step assigns nowhere" in found[3]
    assert "cell 2, tag 'pipeline-metrics', line 2: 'print(acc, 2)': a pipeline-metrics cell " \
           "holds only print(NAME) or NAME lines" in found[1]
    assert "line 3" in found[2]
    assert ("cell 3, step 'late', tag 'step:late': a step cell after the pipeline-metrics "
            "cell (cell 2)") in found[0]


@pytest.mark.parametrize(("tag", "resources", "other"), [
    ("limit:cpu:2", Resources(cpus=2.0), ()),
    ("limit:cpu:500m", Resources(cpus=0.5), ()),
    ("limit:cpu:1.5", Resources(cpus=1.5), ()),
    ("limit:memory:512Mi", Resources(memory_bytes=512 * 2**20), ()),
    ("limit:memory:4Gi", Resources(memory_bytes=4 * 2**30), ()),
    ("limit:memory:1G", Resources(memory_bytes=10**9), ()),
    ("limit:memory:1e9", Resources(memory_bytes=10**9), ()),
    ("limit:memory:1000", Resources(memory_bytes=1000), ()),
    ("limit:memory:1.5k", Resources(memory_bytes=1500), ()),
    ("limit:nvidia.com/gpu:2", Resources(gpus=2), ()),
    ("limit:amd.com/gpu:1", Resources(gpus=1), ()),
    ("limit:gpu:0", Resources(gpus=0), ()),
    ("limit:ephemeral-storage:1Gi", Resources(), (("ephemeral-storage", "1Gi"),)),
])
def test_limits(tmp_path: Path, tag: str, resources: Resources,
                other: tuple[tuple[str, str], ...]) -> None:
    header = load(tmp_path, [("x = 1", ["step:s", tag])]).step("s").header
    assert header.resources == resources
    assert header.other_limits == other


def test_quantities() -> None:
    assert parse_quantity("250m") == Fraction(1, 4)
    assert parse_quantity("2Ki") == 2048
    assert parse_quantity("3E") == 3 * 10**18
    assert parse_quantity(".5") == Fraction(1, 2)
    for bad in ("", "1.2.3", "Gi", "5 Gi", "-1", "1x"):
        with pytest.raises(ValueError):
            parse_quantity(bad)


def test_labels_annotations_cache_image(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        ("x = 1", ["step:a", "label:team:ml", "annotation:example.com/note:a:b:c",
                   "cache:disabled", "image:python:3.12-slim"]),
        ("y = 1", ["step:b", "cache:enabled"]),
    ])
    a, b = pipeline.step("a").header, pipeline.step("b").header
    assert a.labels == (("team", "ml"),)
    assert a.annotations == (("example.com/note", "a:b:c"),)  # the value keeps its colons
    assert a.allow_reuse is False and b.allow_reuse is True
    assert a.image == "python:3.12-slim" and b.image is None


def test_notebook_metadata_defaults(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        ("x = 1", ["step:a", "label:team:mine", "limit:cpu:4", "image:own:1"]),
        ("y = 1", ["step:b"]),
    ], kale={
        "experiment_name": "churn", "docker_image": "base:2", "pipeline_name": "ignored",
        "volumes": [], "katib_run": False,
        "steps_defaults": ["label:team:all", "label:env:prod", "limit:cpu:1",
                           "limit:memory:2Gi", "cache:disabled", "annotation:k:v"],
    })
    assert pipeline.experiment == "churn"
    a, b = pipeline.step("a").header, pipeline.step("b").header
    assert a.image == "own:1" and b.image == "base:2"
    assert dict(a.labels) == {"team": "mine", "env": "prod"}
    assert dict(b.labels) == {"team": "all", "env": "prod"}
    assert a.resources == Resources(cpus=4.0, memory_bytes=2 * 2**30)
    assert b.resources == Resources(cpus=1.0, memory_bytes=2 * 2**30)
    assert not a.allow_reuse and not b.allow_reuse
    assert a.annotations == b.annotations == (("k", "v"),)
    assert issues(pipeline) == []


def test_steps_defaults_image_wins_over_docker_image(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [("x = 1", ["step:a"])],
                    kale={"docker_image": "base:1", "steps_defaults": ["image:default:2"]})
    assert pipeline.step("a").header.image == "default:2"


def test_every_mistake_at_once_naming_cell_and_tag(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        ("a = 1", ["step:a", "setp:typo"]),
        ("b = 1", ["step:b", "prev:later"]),
        ("c = 1", ["step:c", "step:d"]),
        ("d = 1", ["prev:a", "limit:cpu:2"]),
        ("e = 1", ["step:e", "limit:cpu:lots", "limit:memory:512m", "limit:gpu:0.5",
                   "cache:maybe", "label:nokey"]),
        ("f = 1", ["step:f", "secret:db", "notebook:other", "report:maybe"]),
        ("g = 1", ["step:my-step"]),
        ("h = 1", ["step:class"]),
        ("i = 1", ["imports", "step:i"]),
        ("z = 1", ["step:later"]),
    ], kale={"steps_defaults": ["limit:cpu:x", "prev:a"]})
    with pytest.raises(DefinitionError) as raised:
        pipeline.validate()
    text = str(raised.value)
    expected = [
        "tag 'limit:cpu:x': 'x' is not a Kubernetes quantity",
        "kubeflow_notebook.steps_defaults tag 'prev:a': steps_defaults takes image:",
        "cell 1, step 'a', tag 'setp:typo': unknown tag (Kale's tags: step:NAME, block:NAME,",
        "cell 2, step 'b', tag 'prev:later': prev: names step 'later', which is not defined "
        "above this cell (steps above: a)",
        "cell 3, step 'c', tag 'step:d': one cell cannot be two steps",
        "cell 4, tag 'prev:a': prev: applies to a step, and a cell without step:NAME is none",
        "cell 4, tag 'limit:cpu:2': limit: applies to a step",
        "cell 5, step 'e', tag 'limit:cpu:lots': 'lots' is not a Kubernetes quantity",
        "cell 5, step 'e', tag 'limit:memory:512m': memory '512m' is 512 thousandths of a byte",
        "cell 5, step 'e', tag 'limit:gpu:0.5': GPUs '0.5' must be a whole number",
        "cell 5, step 'e', tag 'cache:maybe': cache: takes enabled or disabled",
        "cell 5, step 'e', tag 'label:nokey': label: must be label:KEY:VALUE",
        "cell 6, step 'f', tag 'secret:db': secret: must be secret:SECRET_NAME:KEY:ENV_VAR",
        "cell 6, step 'f', tag 'notebook:other': not supported: steps from another notebook",
        "cell 6, step 'f', tag 'report:maybe': report: takes enabled or disabled",
        "cell 7, tag 'step:my-step': step name 'my-step' is not valid",
        "cell 8, tag 'step:class': step name 'class' is not valid",
        "cell 9, step 'i', tag 'step:i': a 'imports' cell is not a step: remove one",
    ]
    for line in expected:
        assert line in text, line
    assert len(raised.value.issues) == len(expected)


def test_mlstep_and_kale_step_tags_together_is_an_error(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        "%%mlstep a --output o\npass",
        ("x = 1", ["step:b"]),
    ])
    assert pipeline.kind == MLSTEP and pipeline.step_names == ["a"]
    [problem] = pipeline.parse_issues
    assert problem.cell == 2 and problem.field == "tag 'step:b'"
    assert "has %%mlstep cells (cell 1) and Kale step tags: use one or the other" in problem.message


def test_plain_mlstep_notebooks_keep_their_meaning(tmp_path: Path) -> None:
    # papermill's `parameters` tag, a `skip` or `imports` tag: not Kale in an %%mlstep notebook
    pipeline = load(tmp_path, [
        ("x = 1", ["parameters"]),
        ("%%mlsetup\nimport os", ["imports"]),
        ("%%mlstep a --output o --param n=1\npass", ["skip", "hide-input"]),
    ])
    assert pipeline.kind == MLSTEP
    assert pipeline.step_names == ["a"] and pipeline.parse_issues == ()
    assert pipeline.step("a").header.params == (("n", 1),)
    assert [cell.code for cell in pipeline.setup] == ["import os"]


def test_notebook_without_steps(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="this Kale notebook has no cell tagged step:NAME"):
        load(tmp_path, [("import os", ["imports"])])
    with pytest.raises(DefinitionError, match="no %%mlstep cells"):
        load(tmp_path, [("x = 1", ["parameters"])])


def test_magics_in_steps_do_not_break_the_analysis(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        ("n = 3", ["pipeline-parameters"]),
        ("%matplotlib inline\n!echo hi\nfiles = !ls\nvalues = list(range(n))", ["step:a"]),
        ("total = sum(values)", ["step:b", "prev:a"]),
        ("print(total)", ["pipeline-metrics"]),
    ])
    assert pipeline.step("a").header.params == (("n", 3),)
    assert pipeline.step("a").code.startswith("%matplotlib inline\n!echo hi")
    assert pipeline.step("b").code.endswith('_mlpipe_metrics.log("total", total)')
    assert issues(pipeline) == []


def test_a_repeated_step_cell_adds_tags_and_conflicts_are_errors(tmp_path: Path) -> None:
    pipeline = load(tmp_path, [
        ("x = 1", ["step:a", "image:one"]),
        ("y = 1", ["step:b"]),
        ("z = 1", ["step:a", "prev:b", "image:two", "label:k:v"]),
    ])
    header = pipeline.step("a").header
    assert header.labels == (("k", "v"),) and header.image == "one"
    assert pipeline.upstream("a") == {"b"}
    [conflict] = issues(pipeline)
    assert "cell 3, step 'a', tag 'image:two': step 'a' already has 'image:one' (cell 1)" in conflict


def test_secret_tags_map_to_mlpipe_secrets(tmp_path: Path) -> None:
    from mlpipe_jupyter.model.step import SecretUse

    pipeline = load(tmp_path, [
        ("a = 1", ["step:a", "secret:db-creds:password:DB_PASSWORD", "secret:api:token"]),
        ("b = 1", ["step:b", "prev:a", "secret:db-creds:user:DB_PASSWORD"]),
        ("c = 1", ["step:c", "prev:b"]),
    ], kale={"steps_defaults": ["secret:shared:key:SHARED_KEY"]})
    assert issues(pipeline) == []
    headers = {step.name: step.header for step in pipeline.steps}
    assert set(headers["a"].secrets) == {SecretUse("db-creds.password", "DB_PASSWORD"),
                                         SecretUse("api.token", "TOKEN"),
                                         SecretUse("shared.key", "SHARED_KEY")}
    # a step's own tag wins over steps_defaults for the same variable
    assert set(headers["b"].secrets) == {SecretUse("db-creds.user", "DB_PASSWORD"),
                                         SecretUse("shared.key", "SHARED_KEY")}
    assert headers["c"].secrets == (SecretUse("shared.key", "SHARED_KEY"),)


def test_convert_writes_secret_options(tmp_path: Path) -> None:
    from mlpipe_jupyter.conversion import step_line

    pipeline = load(tmp_path, [("a = 1", ["step:a", "secret:db-creds:password:DB_PW"])])
    assert step_line(pipeline.steps[0], pipeline) == "%%mlstep a --secret db-creds.password=DB_PW"
