"""What ``--sweep`` means: grids, sampled ranges, and every way to write one wrong."""

from __future__ import annotations

import ast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlpipe_jupyter.model.sweep import (
    CONFIRM_ABOVE,
    SweepSyntaxError,
    parse_sweep,
    split_values,
    sweep_issues,
)

# values as real notebooks hold them: numbers, strings with commas and quotes, None, True,
# unicode, nested containers
literals = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=6,
)


@given(st.lists(literals, min_size=1, max_size=5))
def test_split_values_keeps_every_literal_whole(values: list[object]) -> None:
    texts = [repr(v) for v in values]
    parts = split_values(",".join(texts))
    assert [ast.literal_eval(p) for p in parts] == values


def test_a_grid_is_every_combination_in_order() -> None:
    spec = parse_sweep(["C=0.01,0.1,1,10", "frac=0.5,0.8"])
    assert spec.size() == 8
    members = spec.members()
    assert members[:3] == [{"C": "0.01", "frac": "0.5"}, {"C": "0.01", "frac": "0.8"},
                           {"C": "0.1", "frac": "0.5"}]
    assert len({tuple(m.items()) for m in members}) == 8


def test_values_keep_brackets_quotes_and_bare_words() -> None:
    spec = parse_sweep(["layers=[64, 32],[128]", "name='a,b',rbf", "flag=True,None"])
    assert spec.axes[0].values == ("[64, 32]", "[128]")
    assert spec.axes[1].values == ("'a,b'", "rbf")
    assert spec.size() == 8


def test_sampling_is_seeded_and_within_range() -> None:
    spec = parse_sweep(["C=loguniform(0.001,10)", "depth=randint(2,5)", "kind=rf,svm"],
                       samples=20, seed=7)
    members = spec.members()
    assert members == parse_sweep(["C=loguniform(0.001,10)", "depth=randint(2,5)",
                                   "kind=rf,svm"], samples=20, seed=7).members()
    assert members != parse_sweep(["C=loguniform(0.001,10)", "depth=randint(2,5)",
                                   "kind=rf,svm"], samples=20, seed=8).members()
    assert all(0.001 <= float(m["C"]) <= 10 for m in members)
    assert {int(m["depth"]) for m in members} <= {2, 3, 4, 5}
    assert {m["kind"] for m in members} <= {"rf", "svm"}


@pytest.mark.parametrize(("args", "samples", "seed", "message"), [
    ([], None, None, "at least one --sweep"),
    (["C"], None, None, "write NAME=V1,V2"),
    (["C="], None, None, "no values for C"),
    (["C=1,,2"], None, None, "value 2 of C is empty"),
    (["C=1,2,1"], None, None, "listed twice"),
    (["C=[1,2"], None, None, "unclosed bracket"),
    (["C=1", "C=2"], None, None, "swept twice"),
    (["2x=1"], None, None, "not a parameter name"),
    (["C=uniform(1,0)"], 3, None, "LOW must be less than HIGH"),
    (["C=loguniform(0,1)"], 3, None, "LOW > 0"),
    (["C=normal(0,1)"], 3, None, "unknown distribution 'normal'"),
    (["C=uniform(0,1)"], None, None, "--samples N"),
    (["C=1,2"], 0, None, "--samples must be at least 1"),
    (["C=1,2"], None, 3, "--seed only applies with --samples"),
])
def test_malformed_sweeps_are_named(args: list[str], samples: int | None, seed: int | None,
                                    message: str) -> None:
    with pytest.raises(SweepSyntaxError) as raised:
        parse_sweep(args, samples, seed)
    assert message in str(raised.value)


def test_undeclared_fixed_and_huge_sweeps_are_refused() -> None:
    declared = {"C": 1.0, "frac": 0.8}
    spec = parse_sweep(["C=1,2", "alpha=1,2"])
    text = " ".join(str(i) for i in sweep_issues(spec, declared, {"C": "3"}, yes=False, source="nb"))
    assert "alpha: not a parameter of nb (its parameters: C, frac)" in text
    assert "C: both swept and set with -p" in text
    big = parse_sweep([f"C={','.join(str(i) for i in range(CONFIRM_ABOVE + 1))}"])
    refused = sweep_issues(big, declared, {}, yes=False)
    assert f"this sweep has {CONFIRM_ABOVE + 1} members" in str(refused[0])
    assert "--yes" in str(refused[0])
    assert sweep_issues(big, declared, {}, yes=True) == []
