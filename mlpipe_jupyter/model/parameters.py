"""Pipeline parameters given at run time (``-p NAME=VALUE``): parsing and type checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mlpipe_jupyter.errors import PARAMETER, DefinitionIssue, ParameterError
from mlpipe_jupyter.model.grammar import parse_parameter_value
from mlpipe_jupyter.model.pipeline import Pipeline
from mlpipe_jupyter.model.values import read_literal


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["frac=0.5", "model=rf"]`` -> ``{"frac": "0.5", "model": "rf"}`` (values still text)."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"parameter {item!r} must be NAME=VALUE")
        result[name.strip()] = value
    return result


# How a boolean may be written after -p: Python's spelling, and the lower-case one that
# shells, YAML, JSON and the panel's form use. Anything else is an error, never truthiness.
BOOLEAN_SPELLINGS = {"True": True, "False": False, "true": True, "false": False}


def coerce_parameter(name: str, default: Any, text: str) -> Any:
    """The override ``text`` as a value of the same kind as ``default``.

    A string default takes the text as it is (quotes optional); a boolean default takes
    ``True``/``False``/``true``/``false``; numbers, lists and dicts must parse as a literal
    of a compatible type (an int is fine for a float).
    """
    if isinstance(default, bool) and text.strip() != "None":
        flag = BOOLEAN_SPELLINGS.get(text.strip())
        if flag is None:
            raise ParameterError(
                f"parameter {name!r} is a boolean (default {default!r}): write "
                f"{name}=True or {name}=False (true/false work too), not {text!r}"
            )
        return flag
    if isinstance(default, str):
        # a quoted literal is its string; any other text is the string as typed, spaces kept
        try:
            value = read_literal(text.strip())
        except ValueError:
            return text
        return value if isinstance(value, str) else text
    try:
        value = parse_parameter_value(text)
    except ValueError as exc:
        raise ParameterError(f"parameter {name!r}: {exc}") from None
    if default is None or value is None:
        return value
    expected = type(default)
    if isinstance(value, bool):
        ok = False  # True is an int to Python, but not a number a user means
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise ParameterError(
            f"parameter {name!r} expects {expected.__name__} (default {default!r}), "
            f"got {text!r}"
        )
    return value


def parameter_issues(
    pipeline: Pipeline, overrides: Mapping[str, str]
) -> tuple[dict[str, Any], list[DefinitionIssue]]:
    """The override values by parameter name, and every problem with them: the unknown
    names together, then each value of the wrong type."""
    known = pipeline.parameters()
    issues: list[DefinitionIssue] = []
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        names = ", ".join(sorted(known)) or "none"
        issues.append(DefinitionIssue(
            f"unknown parameter(s) {', '.join(unknown)} for {pipeline.source or 'this pipeline'}"
            f" (its parameters: {names})", kind=PARAMETER,
        ))
    values: dict[str, Any] = {}
    for name, text in overrides.items():
        if name not in known:
            continue
        try:
            values[name] = coerce_parameter(name, known[name], text)
        except ParameterError as exc:
            issues += exc.issues
    return values, issues


def resolve_parameters(pipeline: Pipeline, overrides: Mapping[str, str]) -> dict[str, Any]:
    """Validated override values by parameter name; every problem is reported at once."""
    values, issues = parameter_issues(pipeline, overrides)
    if issues:
        raise ParameterError.of(issues)
    return values


def step_parameters(pipeline: Pipeline, step: str, resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The values a step runs with: its defaults, overridden by the run's values."""
    params = dict(pipeline.step(step).header.params)
    for name in params:
        if name in resolved:
            params[name] = resolved[name]
    return params
