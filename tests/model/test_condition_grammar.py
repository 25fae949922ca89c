"""Conditional steps in the grammar and the model: --run-if, --if, their definition checks,
and conditions that are never evaluated with eval (hypothesis)."""

from __future__ import annotations

import builtins
import operator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipe_jupyter.model.conditions import (
    ALL_DONE,
    ALL_SUCCEEDED,
    ANY_FAILED,
    Condition,
    ConditionFailure,
    evaluate_condition,
    logged_metrics,
    parse_condition,
)
from mlpipe_jupyter.model.grammar import parse_step_header
from mlpipe_jupyter.notebook import pipeline_from_cells


def pipeline(*cells: str):  # type: ignore[no-untyped-def]
    return pipeline_from_cells(list(enumerate(cells, start=1)), source="nb.ipynb")


def messages(*cells: str) -> list[str]:
    return [str(issue) for issue in pipeline(*cells).definition_issues(None)]


# -- grammar --------------------------------------------------------------------------------
def test_run_if_rules_and_default() -> None:
    assert parse_step_header("a").header.run_if == ALL_SUCCEEDED  # type: ignore[union-attr]
    for rule in (ALL_SUCCEEDED, ALL_DONE, ANY_FAILED):
        parsed = parse_step_header(f"a --run-if {rule}")
        assert not parsed.issues and parsed.header and parsed.header.run_if == rule
    assert parse_step_header("a --run-if=all_done").header.run_if == ALL_DONE  # type: ignore[union-attr]


def test_misspelled_run_if_names_the_cell_and_suggests() -> None:
    [issue] = parse_step_header("cleanup --run-if all_don", cell=4).issues
    assert issue.cell == 4 and issue.step == "cleanup" and issue.field == "--run-if all_don"
    assert "unknown run-if rule 'all_don': did you mean 'all_done'?" in issue.message
    assert "all_succeeded, all_done, any_failed" in issue.message
    [issue] = parse_step_header("a --run-if any_fail").issues
    assert "did you mean 'any_failed'?" in issue.message


def test_condition_parsed_with_the_names_it_reads() -> None:
    parsed = parse_step_header(
        "deploy --if \"evaluate.accuracy >= 0.9 and model_kind == 'rf'\"", cell=5)
    assert not parsed.issues and parsed.header is not None
    condition = parsed.header.condition
    assert condition == Condition("evaluate.accuracy >= 0.9 and model_kind == 'rf'",
                                  (("evaluate", "accuracy"),), ("model_kind",))
    assert condition.steps == ("evaluate",)


def test_unquoted_condition_is_one_error_that_says_quote_it() -> None:
    [issue] = parse_step_header("deploy --if evaluate.accuracy >= 0.9 --after x", cell=2).issues
    assert issue.field == "--if"
    assert 'quote the whole condition as one word: --if "evaluate.accuracy >= 0.9"' in issue.message


@pytest.mark.parametrize("text", [
    "a.b > 1", "a.b >= 0.9 and c == 'x'", "not (a.b < 1 or c)", "abs(a.b - 1) <= 0.1",
    "round(a.b, 2) == max(1, 2, min(3, 4))", "len(c) > 2", "c in ('x', 'y')", "c not in [1, 2]",
    "a.b ** 2 % 3 // 1 + -1 * +2 / 4 != 0", "c is None", "c is not None", "True", "1 < a.b < 2",
])
def test_allowed_conditions(text: str) -> None:
    assert parse_condition(text).text == text


@pytest.mark.parametrize(("text", "says"), [
    ("__import__('os')", "calling '__import__' is not allowed"),
    ("a.__class__", "attribute access is only STEP.METRIC"),
    ("a.b.__class__.__bases__", "attribute access is only STEP.METRIC"),
    ("__builtins__", "not allowed"),
    ("(lambda: 1)()", "calling 'lambda: 1' is not allowed"),
    ("lambda: 1", "a lambda is not allowed"),
    ("[x for x in c]", "a comprehension is not allowed"),
    ("{x: 1 for x in c}", "a comprehension is not allowed"),
    ("any(x for x in c)", "calling 'any' is not allowed"),
    ("open('/etc/passwd')", "calling 'open' is not allowed"),
    ("eval('1')", "calling 'eval' is not allowed"),
    ("c[0]", "indexing"),
    ("f'{c}'", "an f-string is not allowed"),
    ("(c := 1)", "an assignment (:=) is not allowed"),
    ("a.b.c > 1", "attribute access is only STEP.METRIC"),
    ("c.upper()", "calling 'c.upper' is not allowed"),
    ("max(c, key=len)", "takes no keyword arguments"),
    ("1 if c else 2", "if/else is not allowed"),
    ("a >=", "is not a valid expression"),
    ("", "the condition is empty"),
    ("import os", "is not a valid expression"),
])
def test_rejected_conditions(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as raised:
        parse_condition(text)
    assert says in str(raised.value)


_FORBIDDEN = st.sampled_from([
    "__import__('os').system('touch /tmp/pwned')", "a.__class__", "a.b.__globals__",
    "(lambda: 0)()", "lambda: 0", "[x for x in c]", "{x for x in c}", "(x for x in c)",
    "{x: x for x in c}", "open('f')", "exec('1')", "getattr(a, 'b')", "c[0]", "f'{c}'",
    "(c := 1)", "a.b.c", "c.__len__()", "type(c)", "globals()", "vars()", "c()", "a.b()",
    "__builtins__", "*c", "{**c}", "await c", "(1).real", "().__class__",
])
_SAFE = st.sampled_from(["a.b", "c", "1", "0.5", "'x'", "True", "None", "abs(a.b)", "len(c)"])
_JOIN = st.sampled_from([" and ", " or ", " == ", " < ", " + ", " * ", ", "])


@settings(max_examples=200, deadline=None)
@given(before=st.lists(st.tuples(_SAFE, _JOIN), max_size=3), bad=_FORBIDDEN,
       after=st.lists(st.tuples(_JOIN, _SAFE), max_size=3), wrap=st.booleans())
def test_generated_dangerous_conditions_are_rejected_and_never_evaluated(
    before: list[tuple[str, str]], bad: str, after: list[tuple[str, str]], wrap: bool,
) -> None:
    text = "".join(a + b for a, b in before) + bad + "".join(a + b for a, b in after)
    if wrap:
        text = f"not ({text})"
    calls: list[str] = []
    real_eval, real_exec = builtins.eval, builtins.exec

    def spy_eval(*args: Any, **kwargs: Any) -> Any:
        calls.append("eval")
        return real_eval(*args, **kwargs)

    def spy_exec(*args: Any, **kwargs: Any) -> Any:
        calls.append("exec")
        return real_exec(*args, **kwargs)

    builtins.eval, builtins.exec = spy_eval, spy_exec
    try:
        with pytest.raises(ValueError):
            parse_condition(text)
        parsed = parse_step_header(f"x --if {text!r}")
        assert parsed.issues and parsed.header is not None and parsed.header.condition is None
        # a Condition made by hand (not by parse_condition) is checked again before simpleeval
        with pytest.raises(ValueError):
            evaluate_condition(Condition(text, (("a", "b"),), ("c",)), {"a": {"b": 1}},
                               {"c": [1]})
    finally:
        builtins.eval, builtins.exec = real_eval, real_exec
    assert calls == []


_OPS: dict[str, Any] = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                        "<": operator.lt, "<=": operator.le, "==": operator.eq,
                        "!=": operator.ne, ">": operator.gt, ">=": operator.ge}


@st.composite
def _expression(draw: st.DrawFn, depth: int = 0) -> tuple[str, Any]:
    """A valid condition text and its value, computed without Python's parser."""
    if depth >= 3 or draw(st.booleans()):
        kind = draw(st.sampled_from(["metric", "param", "number"]))
        if kind == "metric":
            return "ev.acc", 0.85
        if kind == "param":
            return "k", 3
        number = draw(st.integers(-5, 5))
        return (f"({number})", number)
    op = draw(st.sampled_from(sorted(_OPS) + ["and", "or", "not", "abs", "max"]))
    left_text, left = draw(_expression(depth + 1))
    if op == "not":
        return f"(not {left_text})", not left
    if op == "abs":
        return f"abs({left_text})", abs(left)
    right_text, right = draw(_expression(depth + 1))
    if op == "max":
        return f"max({left_text}, {right_text})", max(left, right)
    if op == "and":
        return f"({left_text} and {right_text})", left and right
    if op == "or":
        return f"({left_text} or {right_text})", left or right
    return f"({left_text} {op} {right_text})", _OPS[op](left, right)


@settings(max_examples=200, deadline=None)
@given(_expression())
def test_generated_valid_conditions_evaluate_as_python_would(case: tuple[str, Any]) -> None:
    text, expected = case
    condition = parse_condition(text)
    result = evaluate_condition(condition, {"ev": {"acc": 0.85}}, {"k": 3})
    assert result.value is bool(expected)


def test_evaluation_last_metric_value_and_sentences() -> None:
    condition = parse_condition("evaluate.accuracy >= 0.9 and model_kind == 'rf'")
    result = evaluate_condition(condition, {"evaluate": {"accuracy": 0.85}}, {"model_kind": "rf"})
    assert not result.value
    assert result.sentence(condition) == (
        "condition evaluate.accuracy >= 0.9 and model_kind == 'rf' is false "
        "(evaluate.accuracy = 0.85, model_kind = 'rf')")
    result = evaluate_condition(condition, {"evaluate": {"accuracy": 0.93}}, {"model_kind": "rf"})
    assert result.value and " is true (evaluate.accuracy = 0.93" in result.sentence(condition)


def test_evaluation_failures_name_the_metric_and_step() -> None:
    condition = parse_condition("evaluate.accuracy >= 0.9")
    with pytest.raises(ConditionFailure, match="metric 'accuracy' of step 'evaluate' was not "
                       r"logged \(its metrics: acc\)"):
        evaluate_condition(condition, {"evaluate": {"acc": 0.8}}, {})
    with pytest.raises(ConditionFailure, match="could not be evaluated: TypeError"):
        evaluate_condition(condition, {"evaluate": {"accuracy": "high"}}, {})
    # simpleeval's limits hold: no huge powers or strings
    with pytest.raises(ConditionFailure, match="could not be evaluated"):
        evaluate_condition(parse_condition("k ** 99999999 > 1"), {}, {"k": 10})


# -- metrics a step's code logs --------------------------------------------------------------
def test_literal_metric_names_are_found_statically() -> None:
    found = logged_metrics(
        "import numpy as np\nfrom mlpipe_jupyter import log as record\nimport mlpipe_jupyter\n"
        "context.log('accuracy', 0.9)\nrecord('f1', np.log(2))\n"
        "mlpipe_jupyter.log(name='loss', value=1)\nmlpipe_jupyter.context.log('auc', 1)\n"
        "x = context.inputs.raw\nprint(context.parameters)")
    assert found.names == {"accuracy", "f1", "loss", "auc"} and not found.dynamic


@pytest.mark.parametrize("code", [
    "for name in ('a', 'b'):\n    context.log(name, 1)",
    "context.log(f'acc_{1}', 1)",
    "helpers.evaluate(context)",
    "log = context.log\nlog('a', 1)",
    "%time x = 1",  # a cell magic: nothing can be seen
])
def test_non_literal_metric_names_accept_anything(code: str) -> None:
    assert logged_metrics(code).dynamic


# -- definition checks ---------------------------------------------------------------------------
TRAIN = "%%mlstep train --output model --param model_kind=rf\ncontext.log('loss', 0.1)"
EVALUATE = ("%%mlstep evaluate --input m=train.model\n"
            "context.log('accuracy', 0.9)\ncontext.log('f1', 0.8)")


def test_a_condition_makes_the_steps_it_reads_upstream() -> None:
    p = pipeline(TRAIN, EVALUATE, "%%mlstep deploy --input m=train.model "
                 "--if \"evaluate.accuracy >= 0.9 and model_kind == 'rf'\"")
    assert p.definition_issues(None) == []
    assert p.upstream("deploy") == {"train", "evaluate"}
    assert p.layers() == [["train"], ["evaluate"], ["deploy"]]


def test_condition_definition_errors_name_cell_step_and_field() -> None:
    found = messages(
        TRAIN, EVALUATE,
        "%%mlstep a --if \"evaluate.acuracy > 0.5\"",
        "%%mlstep b --if \"evaluat.accuracy > 0.5\"",
        "%%mlstep c --if \"model_knd == 'rf'\"",
        "%%mlstep d --if \"evaluate > 1\"",
        "%%mlstep e --if \"e.x > 1\"\ncontext.log('x', 1)",
        "%%mlstep f --if \"model_kind.x > 1\"",
    )
    assert found == [
        "cell 3, step 'a', --if evaluate.acuracy > 0.5: step 'evaluate' never logs metric "
        "'acuracy' (did you mean 'accuracy'?) (it logs: accuracy, f1; log it with "
        "context.log('acuracy', value))",
        "cell 4, step 'b', --if evaluat.accuracy > 0.5: step 'evaluat' is not defined in this "
        "notebook (did you mean 'evaluate'?) (steps: train, evaluate, a, b, c, d, e, f)",
        "cell 5, step 'c', --if model_knd == 'rf': 'model_knd' is neither a parameter nor a "
        "step (did you mean 'model_kind'?) (parameters: model_kind)",
        "cell 6, step 'd', --if evaluate > 1: 'evaluate' is a step: a condition reads its "
        "metrics, evaluate.METRIC",
        "cell 7, step 'e', --if e.x > 1: a step's condition cannot read its own metrics (e.x): "
        "it is evaluated before the step runs",
        "cell 8, step 'f', --if model_kind.x > 1: 'model_kind' is a parameter; STEP.METRIC "
        "reads a step's metric",
    ]


def test_a_condition_that_closes_a_cycle_is_an_error() -> None:
    found = messages(
        "%%mlstep a --output o --if \"b.score > 1\"",
        "%%mlstep b --input x=a.o\ncontext.log('score', 2)",
    )
    assert len(found) == 1 and "steps form a cycle" in found[0]


def test_dynamic_metric_names_are_accepted_at_definition_time() -> None:
    assert messages(
        "%%mlstep evaluate\nfor k in ('accuracy',):\n    context.log(k, 1)",
        "%%mlstep deploy --if \"evaluate.accuracy > 0.5\"",
    ) == []


def test_metrics_logged_in_setup_cells_and_helper_modules_count(tmp_path: Any) -> None:
    from mlpipe_jupyter.validation import module_code

    assert messages(
        "%%mlsetup\ndef done():\n    context.log('finished', 1)",
        "%%mlstep evaluate\ndone()",
        "%%mlstep deploy --if \"evaluate.finished == 1\"",
    ) == []
    (tmp_path / "helpers.py").write_text(
        "from mlpipe_jupyter import log\n\ndef score():\n    log('accuracy', 0.9)\n")
    p = pipeline("%%mlstep evaluate\nimport helpers\nhelpers.score()",
                 "%%mlstep deploy --if \"evaluate.accuracy > 0.5\"")
    assert len(p.definition_issues(None)) == 1  # without the module: never logged
    assert p.definition_issues(None, module_code(p, tmp_path)) == []
