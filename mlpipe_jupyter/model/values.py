"""Parameter values as Python literal source text, and back (pure).

A parameter value is whatever ``ast.literal_eval`` can produce: ``True``/``False``/``None``,
ints of any size, floats (``1e999`` is infinity), complex numbers, strings and bytes,
tuples, lists, dicts and sets of those, nested. Wherever a value leaves the process that
parsed it (the step notebook's code, the run store, a container, a Dask worker, the REST
API) it travels as the text ``python_literal`` writes, because JSON cannot carry ``True``
as Python spells it, tuples, non-string dict keys, bytes or infinity, and ``repr`` alone
writes ``inf``, which no Python evaluates.

Nothing here is home-made parsing: reading is ``ast.literal_eval``; writing is ``repr``
except where ``repr`` does not produce a literal (non-finite floats) and where a canonical
order is wanted (``canonical_literal`` sorts dict keys and set members for fingerprints,
since a set's iteration order changes with the interpreter's hash seed).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from typing import Any

# A float too large for a double: the literal Python reads as infinity.
_INFINITY_LITERAL = "1e999"


class NotALiteralError(ValueError):
    """A value that no Python literal can spell (NaN, an object, a recursive list)."""


def python_literal(value: Any) -> str:
    """Source text that ``ast.literal_eval`` (and Python itself) reads back as a value
    equal to ``value`` and of the same type, containers included. Dict and set order is
    kept as given. Raises NotALiteralError for anything else."""
    return _write(value, ordered=False, depth=0)


def canonical_literal(value: Any) -> str:
    """Like ``python_literal``, but one text per value: dict items and set members sorted
    by their own text. Equal values (of the same types) give the same text."""
    return _write(value, ordered=True, depth=0)


def read_literal(text: str) -> Any:
    """The value of literal source ``text``; ValueError when it is not one."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError(f"{text!r} is not a Python literal ({exc})") from None


def literal_mapping(values: Mapping[str, Any]) -> dict[str, str]:
    """``{name: python_literal(value)}``: how a set of named values is stored as JSON."""
    return {name: python_literal(value) for name, value in values.items()}


def read_literal_mapping(texts: Mapping[str, str]) -> dict[str, Any]:
    """The inverse of ``literal_mapping``."""
    return {name: read_literal(text) for name, text in texts.items()}


# The key under which stored JSON holds ``literal_mapping`` text. Parameter names are
# identifiers, so it never collides with one; records written before it hold plain JSON.
_STORED_KEY = "$literals"


def stored_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Named values as a JSON object that ``read_stored_values`` turns back into the same
    values and types (the form the run store and published pipelines keep)."""
    return {_STORED_KEY: literal_mapping(values)}


def read_stored_values(stored: Any) -> dict[str, Any]:
    """The values ``stored_values`` stored; a plain JSON object (older records) as it is."""
    if isinstance(stored, dict) and isinstance(stored.get(_STORED_KEY), dict):
        return read_literal_mapping(stored[_STORED_KEY])
    return dict(stored) if isinstance(stored, dict) else {}


def parameter_text(value: Any) -> str:
    """A value as a user types it after ``-p NAME=``: strings as they are, everything else
    as its literal. Falls back to ``repr`` for a value that has no literal.

    The text of a string is the string itself, so that ``rf`` stays ``rf``; a value that
    must keep its exact type through ``-p`` (a string that reads as a number, surrounding
    spaces) goes as ``python_literal`` instead."""
    if isinstance(value, str):
        return value
    try:
        return python_literal(value)
    except NotALiteralError:
        return repr(value)


def parameter_texts(values: Mapping[str, Any] | None) -> dict[str, str]:
    """``parameter_text`` of each named value (how REST answers, ``-p`` command lines and
    the panel carry values)."""
    return {name: parameter_text(value) for name, value in (values or {}).items()}


def same_value(left: Any, right: Any) -> bool:
    """Equal and of the same type all the way down (``1 == True == 1.0`` is not enough)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(map(same_value, left, right))
    if isinstance(left, dict):
        return list(left) == list(right) and all(
            same_value(k1, k2) and same_value(left[k1], right[k2])
            for k1, k2 in zip(left, right, strict=True)
        )
    if isinstance(left, float) and math.isnan(left):
        return math.isnan(right)
    return bool(left == right)


_MAX_DEPTH = 200  # far beyond any real parameter; stops a self-containing list


def _write(value: Any, ordered: bool, depth: int) -> str:
    if depth > _MAX_DEPTH:
        raise NotALiteralError("the value is nested too deeply (or contains itself)")
    kind = type(value)
    writer = _SCALARS.get(kind)
    if writer is not None:
        return writer(value)

    def inner(item: Any) -> str:
        return _write(item, ordered, depth + 1)

    if kind is tuple:
        items = [inner(item) for item in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if kind is list:
        return f"[{', '.join(inner(item) for item in value)}]"
    if kind is dict:
        pairs = [f"{inner(k)}: {inner(v)}" for k, v in value.items()]
        return "{" + ", ".join(sorted(pairs) if ordered else pairs) + "}"
    if kind is set:
        if not value:
            return "set()"
        members = [inner(item) for item in value]
        return "{" + ", ".join(sorted(members) if ordered else members) + "}"
    raise NotALiteralError(
        f"{type(value).__name__} value {_short_repr(value)} is not a Python literal "
        "(parameters are literals: numbers, strings, bytes, True/False/None, and tuples, "
        "lists, dicts and sets of those)"
    )


def _float(value: float) -> str:
    if math.isnan(value):
        raise NotALiteralError("NaN has no Python literal")
    if math.isinf(value):
        return _INFINITY_LITERAL if value > 0 else f"-{_INFINITY_LITERAL}"
    return repr(value)


def _complex(value: complex) -> str:
    real, imag = value.real, value.imag
    if real == 0 and math.copysign(1.0, real) > 0:
        return f"{_float(imag)}j"
    sign = "-" if imag < 0 or (imag == 0 and math.copysign(1.0, imag) < 0) else "+"
    return f"({_float(real)}{sign}{_float(abs(imag))}j)"


def _int(value: int) -> str:
    try:
        return repr(value)
    except ValueError:  # beyond sys.get_int_max_str_digits(); literal_eval refuses it too
        raise NotALiteralError("the int has too many digits for a literal") from None


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


_SCALARS: dict[type, Callable[[Any], str]] = {
    bool: repr,
    type(None): repr,
    int: _int,
    float: _float,
    complex: _complex,
    str: repr,
    bytes: repr,
}
