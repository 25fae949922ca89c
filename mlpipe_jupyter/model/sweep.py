"""Parameter sweeps: what ``--sweep NAME=...`` means, and the members it expands to (pure).

A sweep is a set of runs of one notebook (its *members*) that differ only in some
parameters. ``--sweep C=0.01,0.1,1 --sweep frac=0.5,0.8`` is the grid of every
combination (6 members); a range (``--sweep C=loguniform(0.001,10)``) is sampled instead,
with ``--samples N`` and ``--seed S`` (then list axes are sampled too: random search).

A member is a mapping ``name -> text``, the text a user would type after ``-p NAME=``,
so that each member is validated and coerced exactly like a ``-p`` override. Values are
split at top-level commas: brackets and quotes protect theirs (``layers=[64,32],[128]``).

Why no library: the syntax is a comma list and three distribution calls; ``ast`` reads the
calls' literal arguments, and the grammar of values is ``-p``'s own (model.parameters).
"""

from __future__ import annotations

import ast
import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlpipe_jupyter.errors import PARAMETER, DefinitionIssue

# Above this many members a sweep starts only when the user confirms (--yes).
CONFIRM_ABOVE = 500
# Sampled floats keep this many significant digits: readable tables, stable fingerprints.
SAMPLE_DIGITS = 4
DISTRIBUTIONS = ("uniform", "loguniform", "randint")


@dataclass(frozen=True)
class Axis:
    """One swept parameter: a list of value texts, or a distribution to sample."""

    name: str
    values: tuple[str, ...] = ()  # grid values as -p texts
    distribution: str | None = None  # one of DISTRIBUTIONS
    low: float = 0.0
    high: float = 0.0

    def describe(self) -> str:
        if self.distribution:
            return f"{self.name}={self.distribution}({_number(self.low)},{_number(self.high)})"
        return f"{self.name}={','.join(self.values)}"

    def sample(self, rng: random.Random) -> str:
        if self.distribution is None:
            return rng.choice(self.values)
        if self.distribution == "randint":
            return str(rng.randint(int(self.low), int(self.high)))
        if self.distribution == "loguniform":
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return repr(float(f"{value:.{SAMPLE_DIGITS}g}"))


@dataclass(frozen=True)
class SweepSpec:
    """What the user asked for: the axes, and the sampling (None: the full grid)."""

    axes: tuple[Axis, ...]
    samples: int | None = None
    seed: int = 0
    texts: tuple[str, ...] = field(default=(), compare=False)  # as given, for records

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(axis.name for axis in self.axes)

    def size(self) -> int:
        """How many members the sweep has (without expanding it)."""
        if self.samples is not None:
            return self.samples
        return math.prod(len(axis.values) for axis in self.axes)

    def members(self) -> list[dict[str, str]]:
        """Each member's swept values, as ``-p`` texts, in a stable order: the grid in the
        order the axes and their values were given, or the samples in draw order."""
        if self.samples is None:
            grid = itertools.product(*(axis.values for axis in self.axes))
            return [dict(zip(self.names, combo, strict=True)) for combo in grid]
        rng = random.Random(self.seed)
        return [{axis.name: axis.sample(rng) for axis in self.axes} for _ in range(self.samples)]

    def describe(self) -> str:
        text = " ".join(f"--sweep {axis.describe()}" for axis in self.axes)
        if self.samples is not None:
            text += f" --samples {self.samples} --seed {self.seed}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept with the sweep's record and sent over REST."""
        data: dict[str, Any] = {"sweep": [axis.describe() for axis in self.axes]}
        if self.samples is not None:
            data["samples"] = self.samples
            data["seed"] = self.seed
        return data


class SweepSyntaxError(ValueError):
    """A sweep that cannot be read; ``issues`` names each problem."""

    def __init__(self, issues: Sequence[DefinitionIssue]) -> None:
        self.issues = list(issues)
        super().__init__("; ".join(str(issue) for issue in self.issues))


def parse_sweep(items: Iterable[str], samples: int | None = None, seed: int | None = None
                ) -> SweepSpec:
    """``["C=0.01,0.1", "frac=uniform(0.5,0.9)"]`` -> SweepSpec. Raises SweepSyntaxError
    with every problem at once."""
    texts = tuple(items)
    issues: list[DefinitionIssue] = []
    axes: list[Axis] = []
    seen: set[str] = set()
    for text in texts:
        try:
            axis = parse_axis(text)
        except ValueError as exc:
            issues.append(_issue(f"--sweep {text!r}: {exc}"))
            continue
        if axis.name in seen:
            issues.append(_issue(f"--sweep {axis.name}: the parameter is swept twice; give "
                                 "all its values in one --sweep"))
            continue
        seen.add(axis.name)
        axes.append(axis)
    if not texts:
        issues.append(_issue("a sweep needs at least one --sweep NAME=V1,V2,..."))
    if samples is not None and samples < 1:
        issues.append(_issue(f"--samples must be at least 1, not {samples}"))
    if samples is None and seed is not None:
        issues.append(_issue("--seed only applies with --samples N (random sampling)"))
    ranged = [axis.name for axis in axes if axis.distribution]
    if ranged and samples is None:
        issues.append(_issue(f"--sweep {', '.join(ranged)}: a range is sampled; say how many "
                             "members with --samples N (and --seed S to vary the draw)"))
    if issues:
        raise SweepSyntaxError(issues)
    return SweepSpec(tuple(axes), samples, seed if seed is not None else 0, texts)


def requested_sweep(items: Sequence[str], samples: int | None, seed: int | None
                    ) -> SweepSpec | None:
    """The sweep that command-line options ask for (``--sweep``, ``--samples``, ``--seed``),
    or None when they ask for none."""
    if not items and samples is None and seed is None:
        return None
    return parse_sweep(items, samples, seed)


def parse_axis(text: str) -> Axis:
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError("write NAME=V1,V2,... or NAME=uniform(LOW,HIGH), "
                         "loguniform(LOW,HIGH), randint(LOW,HIGH)")
    if not name.isidentifier():
        raise ValueError(f"{name!r} is not a parameter name")
    values = values.strip()
    if not values:
        raise ValueError(f"no values for {name}")
    distribution = _distribution(values)
    if distribution is not None:
        kind, low, high = distribution
        return Axis(name, distribution=kind, low=low, high=high)
    parts = split_values(values)
    empty = [i + 1 for i, part in enumerate(parts) if not part.strip()]
    if empty:
        raise ValueError(f"value {empty[0]} of {name} is empty (a stray comma?)")
    parts = [part.strip() for part in parts]
    repeated = sorted({part for part in parts if parts.count(part) > 1})
    if repeated:
        raise ValueError(f"{name}: value {repeated[0]} is listed twice")
    return Axis(name, values=tuple(parts))


def split_values(text: str) -> list[str]:
    """Split at commas outside brackets and quotes: ``1,[2,3],'a,b'`` -> 3 values."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    current: list[str] = []
    escaped = False
    for char in text:
        if quote:
            current.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced {char!r} in {text!r}")
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote or depth:
        raise ValueError(f"unclosed {'quote' if quote else 'bracket'} in {text!r}")
    parts.append("".join(current))
    return parts


def _distribution(text: str) -> tuple[str, float, float] | None:
    """``loguniform(0.001, 10)`` -> ("loguniform", 0.001, 10.0); None if not a call."""
    head = text.split("(", 1)[0].strip()
    if "(" not in text or head not in DISTRIBUTIONS:
        if head.isidentifier() and "(" in text and text.endswith(")"):
            raise ValueError(f"unknown distribution {head!r}; use one of "
                             f"{', '.join(DISTRIBUTIONS)}")
        return None
    try:
        call = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ValueError(f"{text!r} is not {head}(LOW,HIGH)") from None
    if not isinstance(call, ast.Call) or call.keywords or len(call.args) != 2:
        raise ValueError(f"{text!r}: write {head}(LOW,HIGH)")
    try:
        low, high = (ast.literal_eval(arg) for arg in call.args)
    except ValueError:
        raise ValueError(f"{text!r}: LOW and HIGH must be numbers") from None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ValueError(f"{text!r}: LOW and HIGH must be numbers")
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"{text!r}: LOW must be less than HIGH")
    if head == "loguniform" and low <= 0:
        raise ValueError(f"{text!r}: loguniform needs LOW > 0")
    if head == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        raise ValueError(f"{text!r}: randint takes whole numbers")
    return head, float(low), float(high)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _issue(message: str) -> DefinitionIssue:
    return DefinitionIssue(message, field="--sweep", kind=PARAMETER)


def sweep_issues(spec: SweepSpec, declared: Mapping[str, Any], fixed: Iterable[str],
                 yes: bool, source: str | None = None) -> list[DefinitionIssue]:
    """What is wrong with running ``spec`` on a notebook with parameters ``declared``,
    when ``fixed`` are set with ``-p`` (the members' values are checked one by one by the
    caller, like ``-p`` values)."""
    issues: list[DefinitionIssue] = []
    unknown = [name for name in spec.names if name not in declared]
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        issues.append(_issue(
            f"{', '.join(unknown)}: not a parameter of {source or 'this notebook'} "
            f"(its parameters: {known})"))
    both = sorted(set(spec.names) & set(fixed))
    if both:
        issues.append(_issue(f"{', '.join(both)}: both swept and set with -p; drop one"))
    size = spec.size()
    if size > CONFIRM_ABOVE and not yes:
        issues.append(_issue(
            f"this sweep has {size} members (more than {CONFIRM_ABOVE}): nothing was "
            "started; add --yes to run them all"))
    return issues


__all__ = ["CONFIRM_ABOVE", "Axis", "SweepSpec", "SweepSyntaxError", "parse_sweep",
           "requested_sweep", "split_values", "sweep_issues"]
