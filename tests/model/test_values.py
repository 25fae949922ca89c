"""Parameter values as literals: every value the grammar accepts comes back the same."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipe_jupyter.errors import ParameterError
from mlpipe_jupyter.model.grammar import parse_param, parse_step_header
from mlpipe_jupyter.model.parameters import coerce_parameter
from mlpipe_jupyter.model.values import (
    NotALiteralError,
    canonical_literal,
    parameter_text,
    python_literal,
    read_literal,
    read_stored_values,
    same_value,
    stored_values,
)
from tests.value_probe import bare_words, literal_values


@settings(max_examples=500)
@given(literal_values)
def test_a_literal_reads_back_as_the_same_value(value: object) -> None:
    assert same_value(read_literal(python_literal(value)), value)
    canonical = canonical_literal(value)  # dict items sorted: equal, not in the same order
    assert read_literal(canonical) == value or value != value
    assert canonical_literal(read_literal(canonical)) == canonical


@settings(max_examples=300)
@given(literal_values)
def test_the_header_grammar_takes_any_literal(value: object) -> None:
    name, parsed = parse_param(f"x={python_literal(value)}")
    assert name == "x" and same_value(parsed, value)


@settings(max_examples=200)
@given(st.dictionaries(st.text(max_size=4), literal_values, max_size=5))
def test_stored_values_survive_json(values: dict[str, object]) -> None:
    import json

    back = read_stored_values(json.loads(json.dumps(stored_values(values))))
    assert all(same_value(back[k], v) for k, v in values.items()) and set(back) == set(values)


@given(bare_words)
def test_bare_words_are_strings(word: str) -> None:
    assert parse_param(f"model={word}") == ("model", word)


def test_values_json_cannot_carry() -> None:
    for value in (True, None, (1, 2), {1: "a", (2, 3): [None]}, b"\x00", float("inf"),
                  -float("inf"), 10**30, 1e-300, "é\n'\"\\", {"nested": {"t": (True,)}}, set()):
        assert same_value(read_literal(python_literal(value)), value), value
    assert python_literal(float("inf")) == "1e999"


def test_canonical_text_ignores_order_but_not_type() -> None:
    assert canonical_literal({"b": 1, "a": 2}) == canonical_literal({"a": 2, "b": 1})
    assert canonical_literal({3, 1, 2}) == "{1, 2, 3}"
    assert canonical_literal((1, 2)) != canonical_literal([1, 2])
    assert canonical_literal({1: "a"}) != canonical_literal({"1": "a"})
    assert canonical_literal(1) != canonical_literal(1.0) != canonical_literal(True)


def test_what_has_no_literal_is_named() -> None:
    with pytest.raises(NotALiteralError, match="NaN"):
        python_literal(math.nan)
    with pytest.raises(NotALiteralError, match="object value .* is not a Python literal"):
        python_literal([object()])
    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(NotALiteralError, match="nested too deeply"):
        python_literal(looped)


def test_parameter_text_is_what_a_user_types() -> None:
    assert parameter_text("rf") == "rf"
    assert parameter_text(True) == "True"
    assert parameter_text((1, "a")) == "(1, 'a')"


@pytest.mark.parametrize("text, expected", [
    ("True", True), ("False", False), ("true", True), ("false", False), (" false ", False),
    ("None", None),
])
def test_boolean_overrides_take_python_and_lower_case_spellings(text: str, expected: object) -> None:
    assert coerce_parameter("use_gpu", False, text) is expected


@pytest.mark.parametrize("text", ["yes", "0", "1", "FALSE", "'False'", "[]", ""])
def test_other_boolean_spellings_are_refused_with_the_ones_accepted(text: str) -> None:
    with pytest.raises(ParameterError,
                       match=r"parameter 'use_gpu' is a boolean .*use_gpu=True or use_gpu=False"):
        coerce_parameter("use_gpu", True, text)


@pytest.mark.parametrize("text, expected", [
    ("gbm", "gbm"), ("  two words ", "  two words "), ("'quoted'", "quoted"), ("1", "1"),
    ("None", "None"), ("[1", "[1"), ("'x\\ny'", "x\ny"),
])
def test_a_string_parameter_takes_the_text_as_typed(text: str, expected: str) -> None:
    assert coerce_parameter("label", "default", text) == expected


def test_lower_case_words_stay_strings_where_the_default_is_not_a_boolean() -> None:
    assert coerce_parameter("mode", "fast", "false") == "false"
    assert coerce_parameter("seed", None, "false") == "false"
    with pytest.raises(ParameterError, match="parameter 'n' expects int"):
        coerce_parameter("n", 3, "true")


def test_an_unbalanced_quote_is_a_quoting_error_at_its_cell() -> None:
    parsed = parse_step_header("train --param 'name=it's' --output o", cell=4)
    assert parsed.header is None
    [issue] = parsed.issues
    assert str(issue).startswith("cell 4, step 'train': quoting error in the %%mlstep line")


def test_fingerprints_tell_values_json_would_merge() -> None:
    from mlpipe_jupyter.model.fingerprint import FingerprintComponents, describe_changes

    def components(value: object) -> FingerprintComponents:
        return FingerprintComponents(code="c", setup="s", params={"p": canonical_literal(value)})

    prints = {components(v).fingerprint() for v in ((1, 2), [1, 2], {1: "a"}, {"1": "a"}, 1, 1.0, True)}
    assert len(prints) == 7
    assert describe_changes(components((1, 2)), components([1, 2])) == [
        "parameter 'p' changed: (1, 2) -> [1, 2]"]
    older = FingerprintComponents.from_dict({**components(1).to_dict(), "scheme": 1})
    assert "fingerprints differently since it was upgraded (scheme 1 -> 2)" in describe_changes(
        older, components(1))[0]
