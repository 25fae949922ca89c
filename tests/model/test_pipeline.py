from __future__ import annotations

import pytest

from mlpipe_jupyter.errors import DefinitionError
from mlpipe_jupyter.model.parameters import ParameterError, resolve_parameters
from mlpipe_jupyter.notebook import pipeline_from_cells


def pipeline(*cells: str):  # type: ignore[no-untyped-def]
    return pipeline_from_cells(list(enumerate(cells, start=1)), source="nb.ipynb")


DIAMOND = (
    "%%mlsetup\nimport os",
    "%%mlstep a --output o --param frac=0.5",
    "%%mlstep b --input x=a.o --output o",
    "%%mlstep c --input x=a.o --output o --param frac=0.7 n=3",
    "%%mlstep d --input x=b.o y=c.o --output o",
    "print('not a step')",
)


def test_dag_from_data_dependencies() -> None:
    p = pipeline(*DIAMOND)
    p.validate({})
    assert p.topological_order() == ["a", "b", "c", "d"]
    assert p.layers() == [["a"], ["b", "c"], ["d"]]
    assert p.upstream("d") == {"b", "c"}
    assert p.descendants(["b"]) == {"d"}
    assert p.ancestors(["d"]) == {"a", "b", "c"}
    assert p.parameters() == {"frac": 0.5, "n": 3}
    assert len(p.setup) == 1 and p.setup[0].cell == 1


def test_every_definition_error_reported_at_once_with_cells() -> None:
    p = pipeline(
        "%%mlstep a --input x=b.o --output o",
        "%%mlstep b --input x=a.o --output o",
        "%%mlstep a --output p",
        "%%mlstep e --input x=a.missing y=nostep.o z=dataset:nope --after e --bad",
        "%%mlstep f --output r=dataset:shared",
        "%%mlstep g --output r=dataset:shared",
    )
    with pytest.raises(DefinitionError) as caught:
        p.validate({"iris": [1]})
    text = str(caught.value)
    assert "nb.ipynb: 8 pipeline definition errors; nothing was run" in text
    for expected in [
        "cell 3, step 'a': duplicate step name (first defined in cell 1)",
        "cell 4, step 'e', --bad: unknown option --bad",
        "step 'a' has no output 'missing'",
        "step 'nostep' is not defined",
        "dataset 'nope' is not registered (known: iris)",
        "--after e: a step cannot run after itself",
        "cell 6, step 'g', --output r=dataset:shared: dataset 'shared' is already registered by f.r",
        "steps form a cycle: a -> b -> a",
    ]:
        assert expected in text


def test_unknown_dataset_version() -> None:
    p = pipeline("%%mlstep a --input x=dataset:iris@3 --output o")
    with pytest.raises(DefinitionError, match=r"dataset 'iris' has no version 3 \(v1, v2\)"):
        p.validate({"iris": [1, 2]})


def test_parameter_overrides_are_type_checked() -> None:
    p = pipeline(*DIAMOND)
    assert resolve_parameters(p, {"frac": "1", "n": "5"}) == {"frac": 1.0, "n": 5}
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) nope .*its parameters: frac, n"):
        resolve_parameters(p, {"nope": "1"})
    with pytest.raises(ParameterError, match="parameter 'n' expects int"):
        resolve_parameters(p, {"n": "many"})
    with pytest.raises(ParameterError, match="parameter 'frac' expects float"):
        resolve_parameters(p, {"frac": "True"})
