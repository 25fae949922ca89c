"""Conditional steps: ``--run-if RULE`` and ``--if "EXPRESSION"`` (pure; docs/workflows.md).

A run-if rule says which outcomes of its upstream steps let a step run:

- ``all_succeeded`` (the default): every upstream step succeeded or was reused;
- ``all_done``: every upstream step has ended, whatever its outcome (clean-up steps);
- ``any_failed``: every upstream step has ended and at least one failed, or was skipped
  because a step above it failed (alert and rollback steps).

A condition is an expression over upstream steps' metrics (``evaluate.accuracy``, the last
value ``context.log("accuracy", x)`` recorded) and the pipeline's parameters (by name).
Only names, ``STEP.METRIC``, comparisons, boolean operators, arithmetic, literals and the
functions ``abs``, ``min``, ``max``, ``round`` and ``len`` are allowed: the text is checked
here, node by node, when the header is read, and evaluated with ``simpleeval`` (never
``eval``) when the step is about to run.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ALL_SUCCEEDED = "all_succeeded"
ALL_DONE = "all_done"
ANY_FAILED = "any_failed"
RUN_IF_RULES = (ALL_SUCCEEDED, ALL_DONE, ANY_FAILED)

SAFE_FUNCTIONS: dict[str, Any] = {"abs": abs, "min": min, "max": max, "round": round,
                                  "len": len}
MAX_CONDITION_LENGTH = 1000

_BOOL_OPS = (ast.And, ast.Or)
_UNARY_OPS = (ast.Not, ast.USub, ast.UAdd)
_BIN_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
_COMPARE_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
                ast.Is, ast.IsNot)


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_run_if(text: str) -> str:
    """A run-if rule; a ValueError names the rules and the closest one."""
    rule = text.strip()
    if rule in RUN_IF_RULES:
        return rule
    closest = difflib.get_close_matches(rule.lower(), RUN_IF_RULES, n=1, cutoff=0.4)
    hint = f"did you mean {closest[0]!r}? " if closest else ""
    raise ValueError(f"unknown run-if rule {text!r}: {hint}(rules: {', '.join(RUN_IF_RULES)})")


@dataclass(frozen=True)
class Condition:
    """A checked ``--if`` expression and the names it reads."""

    text: str
    metrics: tuple[tuple[str, str], ...] = ()  # (step, metric) as written, each once
    names: tuple[str, ...] = ()  # bare names: the pipeline parameters it reads, each once

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps whose metrics it reads, in order of appearance."""
        return tuple(dict.fromkeys(step for step, _ in self.metrics))

    def describe(self) -> str:
        return self.text


def _reject(node: ast.AST, text: str) -> ValueError:
    what = {
        ast.Lambda: "a lambda", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension", ast.GeneratorExp: "a generator expression",
        ast.Subscript: "indexing ([...])", ast.NamedExpr: "an assignment (:=)",
        ast.JoinedStr: "an f-string", ast.Starred: "unpacking (*)", ast.IfExp: "if/else",
        ast.Dict: "a dict", ast.Await: "await", ast.Yield: "yield",
    }.get(type(node), type(node).__name__)
    return ValueError(
        f"{what} is not allowed in a condition {text!r}: use names, STEP.METRIC, "
        "comparisons, and/or/not, arithmetic, literals and abs, min, max, round, len")


def parse_condition(text: str) -> Condition:
    """Check ``text`` node by node; a ValueError says what is not allowed or does not parse."""
    source = text.strip()
    if not source:
        raise ValueError("the condition is empty: --if \"STEP.METRIC >= VALUE\"")
    if len(source) > MAX_CONDITION_LENGTH:
        raise ValueError(f"the condition is longer than {MAX_CONDITION_LENGTH} characters")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"the condition {source!r} is not a valid expression: {exc.msg}"
                         ) from None
    metrics: dict[tuple[str, str], None] = {}
    names: dict[str, None] = {}

    def check(node: ast.AST) -> None:
        if isinstance(node, ast.Constant):
            if node.value is Ellipsis or isinstance(node.value, bytes):
                raise _reject(node, source)
            return
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                raise ValueError(f"name {node.id!r} is not allowed in a condition")
            if node.id in SAFE_FUNCTIONS:
                raise ValueError(f"{node.id} is a function here: call it, {node.id}(...)")
            names[node.id] = None
            return
        if isinstance(node, ast.Attribute):
            if not isinstance(node.value, ast.Name) or node.attr.startswith("_") \
                    or node.value.id.startswith("_"):
                raise ValueError(
                    f"{ast.unparse(node)!r}: attribute access is only STEP.METRIC in a "
                    f"condition {source!r}")
            metrics[(node.value.id, node.attr)] = None
            return
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in SAFE_FUNCTIONS:
                called = ast.unparse(node.func)
                raise ValueError(f"calling {called!r} is not allowed in a condition (functions: "
                                 f"{', '.join(SAFE_FUNCTIONS)})")
            if node.keywords:
                raise ValueError(f"{node.func.id}(...) takes no keyword arguments here")
            for arg in node.args:
                check(arg)
            return
        if isinstance(node, ast.BoolOp) and isinstance(node.op, _BOOL_OPS):
            for value in node.values:
                check(value)
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, _UNARY_OPS):
            check(node.operand)
            return
        if isinstance(node, ast.BinOp) and isinstance(node.op, _BIN_OPS):
            check(node.left)
            check(node.right)
            return
        if isinstance(node, ast.Compare) and all(isinstance(op, _COMPARE_OPS)
                                                 for op in node.ops):
            check(node.left)
            for other in node.comparators:
                check(other)
            return
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            for element in node.elts:
                check(element)
            return
        raise _reject(node, source)

    check(tree.body)
    return Condition(source, tuple(metrics), tuple(names))


# -- metrics a step's code logs (static) ------------------------------------------------------
@dataclass(frozen=True)
class LoggedMetrics:
    """What the code says of the metrics it logs: the literal names, and whether it may log
    others (a name that is not a string literal, or the context handed to other code)."""

    names: frozenset[str] = frozenset()
    dynamic: bool = False

    def __or__(self, other: LoggedMetrics) -> LoggedMetrics:
        return LoggedMetrics(self.names | other.names, self.dynamic or other.dynamic)


def _imports(tree: ast.AST) -> tuple[set[str], set[str], set[str]]:
    """Names bound to the package, to its ``context`` and to its ``log`` function."""
    modules: set[str] = {"mlpipe_jupyter"}
    contexts: set[str] = {"context"}  # the step notebook defines it
    logs: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "mlpipe_jupyter":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module in ("mlpipe_jupyter",
                                                                  "mlpipe_jupyter.step_context"):
            for alias in node.names:
                if alias.name == "context":
                    contexts.add(alias.asname or alias.name)
                elif alias.name == "log":
                    logs.add(alias.asname or alias.name)
                elif alias.name == "*":
                    contexts.add("context")
                    logs.add("log")
    return modules, contexts, logs


def logged_metrics(code: str) -> LoggedMetrics:
    """The metric names ``code`` logs with ``context.log("NAME", ...)`` (or
    ``mlpipe_jupyter.log``, ``from mlpipe_jupyter import log``); ``dynamic`` when a name is
    not a string literal, the context or its ``log`` is used any other way, or the code
    cannot be parsed (cell magics): then any metric may be logged."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return LoggedMetrics(dynamic=True)
    modules, contexts, logs = _imports(tree)
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def is_context(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id in contexts) or (
            isinstance(node, ast.Attribute) and node.attr == "context"
            and isinstance(node.value, ast.Name) and node.value.id in modules)

    def is_log(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in logs
        return isinstance(node, ast.Attribute) and node.attr == "log" and (
            is_context(node.value)
            or (isinstance(node.value, ast.Name) and node.value.id in modules))

    names: set[str] = set()
    dynamic = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and is_log(node.func):
            first = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "name"), None)
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.add(first.value)
            else:
                dynamic = True
        elif is_log(node) and isinstance(node, ast.Name | ast.Attribute):
            parent = parents.get(node)
            if not (isinstance(parent, ast.Call) and parent.func is node) and not (
                    isinstance(parent, ast.alias | ast.ImportFrom)):
                dynamic = True  # the log function handed on: it may log anything
        elif is_context(node) and not isinstance(node, ast.Attribute):
            parent = parents.get(node)
            # context.inputs, context.outputs...: reading it; anything else hands it on
            if not isinstance(parent, ast.Attribute):
                dynamic = True
        elif is_context(node):  # mlpipe_jupyter.context
            parent = parents.get(node)
            if not isinstance(parent, ast.Attribute):
                dynamic = True
    return LoggedMetrics(frozenset(names), dynamic)


# -- evaluation --------------------------------------------------------------------------
class ConditionFailure(Exception):
    """A condition that cannot be evaluated: a metric missing, a type that does not compare."""


class _Metrics:
    """``STEP`` in a condition: its metrics as attributes; a missing one fails clearly."""

    __slots__ = ("_step", "_values")

    def __init__(self, step: str, values: Mapping[str, Any]) -> None:
        self._step = step
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            logged = ", ".join(sorted(self._values)) or "none"
            raise ConditionFailure(
                f"metric {name!r} of step {self._step!r} was not logged "
                f"(its metrics: {logged})") from None


@dataclass(frozen=True)
class ConditionResult:
    value: bool
    shown: str  # the values it read: "evaluate.accuracy = 0.85, model_kind = 'rf'"

    def sentence(self, condition: Condition) -> str:
        """``condition evaluate.accuracy >= 0.9 is false (evaluate.accuracy = 0.85)``."""
        state = "true" if self.value else "false"
        values = f" ({self.shown})" if self.shown else ""
        return f"condition {condition.text} is {state}{values}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def evaluate_condition(
    condition: Condition,
    metrics: Mapping[str, Mapping[str, Any]],
    parameters: Mapping[str, Any],
) -> ConditionResult:
    """Evaluate with ``simpleeval``: ``metrics`` maps each step the condition names to its
    metrics (last value of each), ``parameters`` the run's values. Raises
    ``ConditionFailure`` naming a missing metric, or what went wrong."""
    # checked again here: a condition only ever reaches simpleeval as parse_condition let it
    checked = parse_condition(condition.text)
    names: dict[str, Any] = {name: parameters[name] for name in checked.names
                             if name in parameters}
    for step in checked.steps:
        names[step] = _Metrics(step, metrics.get(step, {}))
    shown = []
    for step, metric in checked.metrics:
        value = getattr(names[step], metric)  # a missing metric fails here, by name
        shown.append(f"{step}.{metric} = {_shown(value)}")
    for name in checked.names:
        if name not in parameters:
            raise ConditionFailure(f"parameter {name!r} has no value in this run")
        shown.append(f"{name} = {_shown(parameters[name])}")
    # imported here: the model is imported wherever a step runs (inside containers, on Dask
    # workers), where only the runner evaluates conditions and simpleeval may be missing
    from simpleeval import EvalWithCompoundTypes

    evaluator = EvalWithCompoundTypes(names=names, functions=dict(SAFE_FUNCTIONS))
    try:
        value = evaluator.eval(checked.text)
    except ConditionFailure:
        raise
    except Exception as exc:  # noqa: BLE001 -- simpleeval's and the operators' errors
        raise ConditionFailure(
            f"condition {condition.text} could not be evaluated: {type(exc).__name__}: {exc}"
        ) from None
    return ConditionResult(bool(value), ", ".join(shown))
