"""Kubeflow Kale's cell tags as a pipeline (issue 14).

A Kale notebook has no ``%%mlstep`` cells: its code cells carry tags in
``cell.metadata.tags`` and the notebook carries ``metadata.kubeflow_notebook``. The rules
follow Kale's notebook processor:

- ``step:NAME`` (and the legacy ``block:NAME``) starts a step, or adds the cell to the step
  of that name when it exists already; ``prev:NAME`` makes the step run after NAME, which
  must be defined above.
- ``imports`` and ``functions`` cells become setup cells (imports first, then functions), as
  Kale prepends them to every step.
- ``pipeline-parameters``: top-level ``NAME = <literal>`` lines, the pipeline parameters.
  A step that uses such a name receives it as its own parameter (injected, fingerprinted).
- ``pipeline-metrics``: ``print(NAME)`` or ``NAME`` lines; the step nearest the end that
  defines NAME logs it as a metric.
- ``skip``: the cell is left out; untagged cells after it still join the block before it.
- an untagged code cell joins the block before it (a step, or an imports/functions/
  parameters/metrics block); untagged cells before any tag are left out.
- ``image:IMG``, ``limit:RESOURCE:VALUE``, ``cache:enabled|disabled``,
  ``label:KEY:VALUE``, ``annotation:KEY:VALUE`` on a step cell set the step's image,
  resource requests, reuse and metadata.
- ``secret:SECRET_NAME:KEY:ENV_VAR`` (Kale: the KEY of the Kubernetes secret SECRET_NAME
  as the environment variable ENV_VAR) is ``--secret SECRET_NAME.KEY=ENV_VAR``: the mlpipe
  secret named ``SECRET_NAME.KEY`` (``mlpipe secret set SECRET_NAME.KEY``), resolved where
  the step runs (docs/secrets.md). Without ``:ENV_VAR`` the variable is KEY upper-cased.

Notebook metadata (``kubeflow_notebook``): ``experiment_name`` (or ``experiment.name``) is
the runs' default experiment; ``docker_image`` the image of steps that name none;
``steps_defaults`` (tag strings) apply to every step, a step's own tag winning. Other keys
(``pipeline_name``, ``pipeline_description``, ``volumes``, ``katib_run``,
``katib_metadata``, ``snapshot_volumes``, ``autosnapshot``, ``storage_class_name``,
``volume_access_mode``, ``base_image`` of old versions ...) describe a Kubeflow deployment
and are ignored.

Where we differ from Kale, on purpose:

- step and parameter names may be any Python identifier (Kale: lowercase only), but not a
  Python keyword (``step:class`` is valid for Kale, not here: a step name is a variable);
- parameters may be any Python literal, ``None``, tuples and containers included (Kale:
  int, float, str, bool);
- a metric is logged under its variable's name (Kale's KFP metric turns ``_`` into ``-``);
  a bare ``NAME`` line is accepted besides ``print(NAME)``;
- a label's or annotation's value keeps its colons (Kale joins the parts without them);
- a step cell that repeats a step name may add ``prev:``/``label:``/... to it (Kale ignores
  the tags of the later cells); a conflicting value is an error;
- ``report:enabled|disabled`` is accepted and changes nothing: every step's executed
  notebook is kept and rendered on demand, so there is always a report;
- ``notebook:`` tags are refused with the reason; other tags
  (``hide-input`` ...) are errors, as in Kale, so that a typo (``setp:train``) is caught.

Everything wrong is collected as ``DefinitionIssue``s in ``Pipeline.parse_issues`` and
reported at once with the structural problems.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from mlpipe_jupyter.cell_code import code_names, parse_cell, used_names, with_functions
from mlpipe_jupyter.errors import DefinitionError, DefinitionIssue
from mlpipe_jupyter.model.grammar import check_identifier, parse_secret, secret_env_var
from mlpipe_jupyter.model.pipeline import KALE, Pipeline
from mlpipe_jupyter.model.step import Resources, SecretUse, SetupCell, Step, StepHeader

METADATA_KEY = "kubeflow_notebook"

SKIP = "skip"
IMPORTS = "imports"
FUNCTIONS = "functions"
PARAMETERS = "pipeline-parameters"
METRICS = "pipeline-metrics"
SPECIAL_TAGS = (SKIP, IMPORTS, FUNCTIONS, PARAMETERS, METRICS)
# the blocks that take the untagged cells after them (Kale's merge targets)
_BLOCKS = (IMPORTS, FUNCTIONS, PARAMETERS, METRICS)

STEP_KINDS = ("step", "block")  # block: is Kale's legacy spelling of step:
_STEP_SETTINGS = ("prev", "image", "limit", "cache", "label", "annotation", "report", "secret")
_UNSUPPORTED = {
    "notebook": "steps from another notebook (Kale's notebook references) are not supported: "
                "run that notebook as its own pipeline, or copy its cells here",
}
KNOWN_TAGS = (
    "step:NAME", "block:NAME", "prev:NAME", "skip", "imports", "functions",
    "pipeline-parameters", "pipeline-metrics", "image:IMAGE", "limit:RESOURCE:VALUE",
    "cache:enabled|disabled", "label:KEY:VALUE", "annotation:KEY:VALUE",
    "report:enabled|disabled", "secret:SECRET_NAME:KEY:ENV_VAR",
)
_DEFAULTS_KINDS = ("image", "limit", "cache", "label", "annotation", "report", "secret")

CPU = "cpu"
MEMORY = "memory"
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "gpu")

METRICS_MODULE = "_mlpipe_metrics"


class CodeCell(Protocol):
    """A code cell as the notebook reader gives it."""

    @property
    def number(self) -> int | None: ...
    @property
    def source(self) -> str: ...
    @property
    def tags(self) -> Sequence[str]: ...


# -- detection -------------------------------------------------------------------------------
def is_kale_tag(tag: object) -> bool:
    """Whether ``tag`` belongs to Kale's tag language (or names a kind Kale knows)."""
    if not isinstance(tag, str):
        return False
    if tag in SPECIAL_TAGS:
        return True
    kind, sep, _ = tag.partition(":")
    return bool(sep) and kind in (*STEP_KINDS, *_STEP_SETTINGS, *_UNSUPPORTED)


def is_step_tag(tag: object) -> bool:
    return isinstance(tag, str) and tag.partition(":")[0] in STEP_KINDS and ":" in tag


def has_kale_tags(cells: Sequence[CodeCell]) -> bool:
    return any(is_kale_tag(tag) for cell in cells for tag in cell.tags)


# -- Kubernetes quantities -------------------------------------------------------------------
# Kale passes limit values to Kubernetes as they are. Kubernetes' own parser lives in the
# kubernetes client (kubernetes.utils.parse_quantity), a large dependency for one function:
# this is the same grammar, written here. A quantity is a decimal number with a binary
# suffix (Ki Mi Gi Ti Pi Ei), a decimal suffix (n u m k M G T P E) or an exponent (1e9).
_QUANTITY = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE]([+-]?\d+))?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
            "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9),
            "T": Fraction(10**12), "P": Fraction(10**15), "E": Fraction(10**18)}


def parse_quantity(text: str) -> Fraction:
    """The exact value of a Kubernetes quantity: ``500m`` is 1/2, ``1Gi`` 2**30, ``1e9``."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (examples: 2, 500m, 512Mi, "
                         "4Gi, 1G, 1e9)")
    number, suffix, exponent = match.groups()
    value = Fraction(number)
    if suffix:
        value *= _BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix]
    elif exponent:
        value *= Fraction(10) ** int(exponent)
    return value


def _cpus(text: str) -> float:
    value = parse_quantity(text)
    if value <= 0:
        raise ValueError(f"cpu {text!r} must be more than zero")
    return float(value)


def _memory_bytes(text: str) -> int:
    if text.strip().endswith("m"):
        raise ValueError(f"memory {text!r} is {text.strip()[:-1]} thousandths of a byte for "
                         "Kubernetes (m is milli): write Mi or M (512Mi, 512M)")
    value = parse_quantity(text)
    if value < 1:
        raise ValueError(f"memory {text!r} must be at least one byte")
    return int(-(-value // 1))  # Kubernetes rounds a memory quantity up to whole bytes


def _gpus(text: str) -> int:
    value = parse_quantity(text)
    if value.denominator != 1 or value < 0:
        raise ValueError(f"GPUs {text!r} must be a whole number")
    return int(value)


# -- one cell's tags -------------------------------------------------------------------------
@dataclass
class _Settings:
    """What step tags (or steps_defaults) say; each value remembers its tag."""

    prev: list[tuple[str, str]] = field(default_factory=list)  # (step, tag)
    image: tuple[str, str] | None = None  # (image, tag)
    cache: tuple[bool, str] | None = None
    cpus: tuple[float, str] | None = None
    memory: tuple[int, str] | None = None
    gpus: tuple[int, str] | None = None
    other_limits: dict[str, tuple[str, str]] = field(default_factory=dict)
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)
    annotations: dict[str, tuple[str, str]] = field(default_factory=dict)
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)  # env -> (secret, tag)

    def given(self) -> list[str]:
        """The tags that set something, for 'needs a step name' messages."""
        tags = [tag for _, tag in self.prev]
        for item in (self.image, self.cache, self.cpus, self.memory, self.gpus):
            if item is not None:
                tags.append(item[1])
        for mapping in (self.other_limits, self.labels, self.annotations, self.secrets):
            tags.extend(tag for _, tag in mapping.values())
        return tags


@dataclass
class _CellTags:
    step: tuple[str, str] | None = None  # (name, tag)
    special: str | None = None
    settings: _Settings = field(default_factory=_Settings)


def _parse_setting(kind: str, rest: str, tag: str, into: _Settings) -> str | None:
    """Apply one image/limit/cache/label/annotation/prev tag; the problem, or None."""
    if kind == "prev":
        problem = check_identifier(rest, "step") if rest else "prev: needs a step name"
        if problem:
            return problem
        into.prev.append((rest, tag))
    elif kind == "image":
        if not rest.strip() or any(c.isspace() for c in rest):
            return "image: needs an image name without spaces (image:python:3.12-slim)"
        into.image = (rest, tag)
    elif kind == "cache":
        if rest not in ("enabled", "disabled"):
            return "cache: takes enabled or disabled"
        into.cache = (rest == "enabled", tag)
    elif kind == "report":
        # Kale's HTML report of a step: mlpipe keeps every step's executed notebook and
        # renders it on demand (`mlpipe show`, the panel), so either value changes nothing
        if rest not in ("enabled", "disabled"):
            return "report: takes enabled or disabled"
    elif kind == "secret":
        parts = rest.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            return "secret: must be secret:SECRET_NAME:KEY:ENV_VAR"
        env = parts[2] if len(parts) == 3 else secret_env_var(parts[1])
        try:
            use = parse_secret(f"{parts[0]}.{parts[1]}={env}")
        except ValueError as exc:
            return str(exc)
        into.secrets[use.env] = (use.name, tag)
    elif kind in ("label", "annotation"):
        key, sep, value = rest.partition(":")
        if not sep or not key.strip():
            return f"{kind}: must be {kind}:KEY:VALUE"
        target = into.labels if kind == "label" else into.annotations
        target[key] = (value, tag)
    elif kind == "limit":
        resource, sep, value = rest.partition(":")
        if not sep or not resource or not value:
            return "limit: must be limit:RESOURCE:VALUE (limit:cpu:2, limit:memory:4Gi)"
        try:
            if resource == CPU:
                into.cpus = (_cpus(value), tag)
            elif resource == MEMORY:
                into.memory = (_memory_bytes(value), tag)
            elif resource in GPU_RESOURCES:
                into.gpus = (_gpus(value), tag)
            else:
                into.other_limits[resource] = (value, tag)
        except ValueError as exc:
            return str(exc)
    return None


def _parse_cell_tags(cell: CodeCell, issues: list[DefinitionIssue]) -> _CellTags:
    parsed = _CellTags()
    step_tagged = any(is_step_tag(tag) for tag in cell.tags)

    def issue(message: str, tag: object) -> None:
        issues.append(DefinitionIssue(message, step=parsed.step[0] if parsed.step else None,
                                      cell=cell.number, field=f"tag {tag!r}"))

    # the step name first, so that every message about this cell names its step
    for tag in cell.tags:
        if is_step_tag(tag):
            assert isinstance(tag, str)
            name = tag.partition(":")[2]
            problem = check_identifier(name, "step") if name else f"{tag} needs a step name"
            if problem:
                issue(f"{problem} (Kale step tag)", tag)
            elif parsed.step is None:
                parsed.step = (name, tag)
            elif parsed.step[0] != name:
                issue(f"one cell cannot be two steps (already {parsed.step[1]!r}); split the "
                      "cell, or give it one step name", tag)
    for tag in cell.tags:
        if not isinstance(tag, str):
            issue(f"a tag must be text, not {type(tag).__name__}", tag)
            continue
        if is_step_tag(tag):
            continue
        if tag in SPECIAL_TAGS:
            if parsed.special is not None and parsed.special != tag:
                issue(f"a cell is one block: it is already tagged {parsed.special!r}", tag)
            else:
                parsed.special = tag
            continue
        kind, sep, rest = tag.partition(":")
        if sep and kind in _UNSUPPORTED:
            issue(f"not supported: {_UNSUPPORTED[kind]}", tag)
        elif sep and kind in _STEP_SETTINGS:
            problem = _parse_setting(kind, rest, tag, parsed.settings)
            if problem:
                issue(problem, tag)
        else:
            issue(f"unknown tag (Kale's tags: {', '.join(KNOWN_TAGS)})", tag)
    if parsed.special is not None and parsed.step is not None:
        issue(f"a {parsed.special!r} cell is not a step: remove one of the two tags",
              parsed.step[1])
        parsed.step = None
    if parsed.step is None and not step_tagged:  # (a bad step name was reported already)
        for tag in parsed.settings.given():
            what = f"a {parsed.special!r} cell" if parsed.special else "a cell without step:NAME"
            issue(f"{tag.partition(':')[0]}: applies to a step, and {what} is none: add "
                  "step:NAME to the cell", tag)
    if parsed.step is None:
        parsed.settings = _Settings()
    return parsed


def _parse_defaults(metadata: Mapping[str, Any], issues: list[DefinitionIssue]) -> _Settings:
    defaults = _Settings()
    tags = metadata.get("steps_defaults") or []
    if not isinstance(tags, list):
        issues.append(DefinitionIssue(f"{METADATA_KEY}.steps_defaults must be a list of tags "
                                      f"(got {type(tags).__name__})"))
        return defaults
    for tag in tags:
        where = f"{METADATA_KEY}.steps_defaults tag {tag!r}"
        kind, sep, rest = tag.partition(":") if isinstance(tag, str) else ("", "", "")
        if sep and kind in _UNSUPPORTED:
            issues.append(DefinitionIssue(f"not supported: {_UNSUPPORTED[kind]}", field=where))
        elif sep and kind in _DEFAULTS_KINDS:
            problem = _parse_setting(kind, rest, str(tag), defaults)
            if problem:
                issues.append(DefinitionIssue(problem, field=where))
        else:
            issues.append(DefinitionIssue(
                "steps_defaults takes image:, limit:, cache:, label:, annotation: and secret: "
                "tags",
                field=where))
    return defaults


def _setup_names(setup: Sequence[SetupCell]) -> tuple[set[str], dict[str, frozenset[str]]]:
    """What the setup cells read: at module level (every step runs it), and in each
    function or class they define (a step that calls it reads those names too)."""
    module_level: set[str] = set()
    functions: dict[str, frozenset[str]] = {}
    for item in setup:
        tree = parse_cell(item.code)
        if tree is None:
            continue
        functions.update(code_names(item.code).functions)
        for statement in tree.body:
            if not isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                module_level |= used_names(statement)
    return module_level, functions


# -- the pipeline ------------------------------------------------------------------------------
@dataclass
class _StepBuild:
    name: str
    cell: int | None
    sources: list[str]
    settings: _Settings


def _merge_settings(step: _StepBuild, new: _Settings, cell: int | None,
                    issues: list[DefinitionIssue]) -> None:
    """A later cell of the same step adds its tags; a different value is a conflict."""
    have = step.settings
    have.prev.extend(new.prev)

    def conflict(tag: str, old: str) -> None:
        issues.append(DefinitionIssue(
            f"step {step.name!r} already has {old!r} (cell {step.cell}): give it once",
            step=step.name, cell=cell, field=f"tag {tag!r}"))

    for attr in ("image", "cache", "cpus", "memory", "gpus"):
        old, value = getattr(have, attr), getattr(new, attr)
        if value is None:
            continue
        if old is None:
            setattr(have, attr, value)
        elif old[0] != value[0]:
            conflict(value[1], old[1])
    for mapping in ("other_limits", "labels", "annotations", "secrets"):
        old_map, new_map = getattr(have, mapping), getattr(new, mapping)
        for key, value in new_map.items():
            if key in old_map and old_map[key][0] != value[0]:
                conflict(value[1], old_map[key][1])
            else:
                old_map.setdefault(key, value)


def _parameters(cells: Sequence[CodeCell],
                issues: list[DefinitionIssue]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for cell in cells:
        tree = parse_cell(cell.source)
        if tree is None:
            issues.append(DefinitionIssue(
                "the pipeline-parameters cell is not valid Python", cell=cell.number,
                field=f"tag {PARAMETERS!r}"))
            continue
        for statement in tree.body:
            where = f"tag {PARAMETERS!r}, line {statement.lineno}"
            line = ast.get_source_segment(cell.source, statement) or ast.unparse(statement)
            target = statement.targets[0] if isinstance(statement, ast.Assign) else None
            if (not isinstance(statement, ast.Assign) or len(statement.targets) != 1
                    or not isinstance(target, ast.Name)):
                issues.append(DefinitionIssue(
                    f"{line.splitlines()[0]!r}: a pipeline-parameters cell holds only "
                    "NAME = <Python literal> lines", cell=cell.number, field=where))
                continue
            try:
                value = ast.literal_eval(statement.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                issues.append(DefinitionIssue(
                    f"{line.splitlines()[0]!r}: a parameter's value must be a Python literal "
                    "(a number, a string, True/False/None, or lists, tuples, dicts, sets of "
                    "those), not an expression", cell=cell.number, field=where))
                continue
            problem = check_identifier(target.id, "parameter")
            if problem:
                issues.append(DefinitionIssue(problem, cell=cell.number, field=where))
                continue
            found[target.id] = value
    return found


def _metric_names(cells: Sequence[CodeCell],
                  issues: list[DefinitionIssue]) -> list[tuple[str, int | None]]:
    names: list[tuple[str, int | None]] = []
    for cell in cells:
        for number, line in enumerate(cell.source.splitlines(), start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            match = re.fullmatch(r"print\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)|([A-Za-z_][A-Za-z0-9_]*)",
                                 text)
            if not match:
                issues.append(DefinitionIssue(
                    f"{text!r}: a pipeline-metrics cell holds only print(NAME) or NAME lines, "
                    "one variable each", cell=cell.number,
                    field=f"tag {METRICS!r}, line {number}"))
                continue
            name = match.group(1) or match.group(2)
            if name not in (n for n, _ in names):
                names.append((name, cell.number))
    return names


def pipeline_from_kale(
    cells: Sequence[CodeCell],
    notebook_metadata: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> Pipeline:
    """The pipeline a Kale-tagged notebook defines (``cells``: its code cells, in order).

    Every problem is kept in ``parse_issues``; ``Pipeline.validate`` reports them at once.
    """
    issues: list[DefinitionIssue] = []
    raw_metadata = (notebook_metadata or {}).get(METADATA_KEY) or {}
    metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
    defaults = _parse_defaults(metadata, issues)

    blocks: dict[str, list[CodeCell]] = {name: [] for name in _BLOCKS}
    steps: dict[str, _StepBuild] = {}
    previous: str | None = None  # the block untagged cells join: a step or one of _BLOCKS
    metrics_cell: int | None = None
    for cell in cells:
        tags = _parse_cell_tags(cell, issues)
        if tags.special == SKIP:
            continue  # not the previous block: untagged cells after it join the one before
        if tags.special is not None:
            blocks[tags.special].append(cell)
            previous = tags.special
            if tags.special == METRICS and metrics_cell is None:
                metrics_cell = cell.number
            continue
        if tags.step is None:
            if previous in blocks:
                blocks[previous].append(cell)
            elif previous is not None:
                steps[previous].sources.append(cell.source)
            continue  # untagged cells before any tag are not part of the pipeline
        name, step_tag = tags.step
        if metrics_cell is not None:
            issues.append(DefinitionIssue(
                f"a step cell after the pipeline-metrics cell (cell {metrics_cell}): the "
                "pipeline-metrics cell comes last, its metrics are the pipeline's results",
                step=name, cell=cell.number, field=f"tag {step_tag!r}"))
        for other, tag in tags.settings.prev:
            if other not in steps and other != name:
                known = ", ".join(steps) or "none yet"
                issues.append(DefinitionIssue(
                    f"prev: names step {other!r}, which is not defined above this cell "
                    f"(steps above: {known})", step=name, cell=cell.number,
                    field=f"tag {tag!r}"))
        if name in steps:
            steps[name].sources.append(cell.source)
            _merge_settings(steps[name], tags.settings, cell.number, issues)
        else:
            steps[name] = _StepBuild(name, cell.number, [cell.source], tags.settings)
        previous = name

    setup = tuple(SetupCell(code=cell.source, cell=cell.number)
                  for cell in blocks[IMPORTS] + blocks[FUNCTIONS])
    parameters = _parameters(blocks[PARAMETERS], issues)
    setup_uses, setup_functions = _setup_names(setup)

    built: list[Step] = []
    for build in steps.values():
        code = "\n".join(build.sources)
        tree = parse_cell(code)
        uses = with_functions(used_names(tree) if tree is not None else set(),
                              setup_functions) | setup_uses
        built.append(Step(header=_header(build, defaults, metadata, parameters, uses),
                          code=code, cell=build.cell))

    built = _assign_metrics(built, _metric_names(blocks[METRICS], issues), source, issues)
    experiment = metadata.get("experiment_name")
    if not experiment and isinstance(metadata.get("experiment"), Mapping):
        experiment = metadata["experiment"].get("name")
    return Pipeline(
        steps=tuple(built), setup=setup, source=source, parse_issues=tuple(issues),
        declared_parameters=tuple(parameters.items()),
        experiment=str(experiment) if experiment else None, kind=KALE,
    )


def _header(build: _StepBuild, defaults: _Settings, metadata: Mapping[str, Any],
            parameters: Mapping[str, Any], uses: set[str]) -> StepHeader:
    own = build.settings

    def pick(attr: str) -> Any:
        value = getattr(own, attr) or getattr(defaults, attr)
        return value[0] if value is not None else None

    def merged(attr: str) -> tuple[tuple[str, str], ...]:
        values = {key: value for key, (value, _) in getattr(defaults, attr).items()}
        values.update({key: value for key, (value, _) in getattr(own, attr).items()})
        return tuple(values.items())

    image = pick("image") or (str(metadata["docker_image"]) if metadata.get("docker_image")
                              else None)
    cache = pick("cache")
    return StepHeader(
        name=build.name,
        params=tuple((name, value) for name, value in parameters.items() if name in uses),
        after=tuple(dict.fromkeys(name for name, _ in own.prev)),
        allow_reuse=True if cache is None else bool(cache),
        image=image,
        resources=Resources(cpus=pick("cpus"), memory_bytes=pick("memory"), gpus=pick("gpus")),
        labels=merged("labels"),
        annotations=merged("annotations"),
        other_limits=merged("other_limits"),
        secrets=tuple(SecretUse(name=name, env=env) for env, name in merged("secrets")),
    )


def metric_lines(names: Sequence[str]) -> str:
    """The code appended to a step to log ``names`` as metrics."""
    lines = [f"import mlpipe_jupyter as {METRICS_MODULE}"]
    lines += [f'{METRICS_MODULE}.log("{name}", {name})' for name in names]
    return "\n".join(lines)


def _assign_metrics(steps: list[Step], metrics: list[tuple[str, int | None]],
                    source: str | None, issues: list[DefinitionIssue]) -> list[Step]:
    """Each metric logged by the step nearest the end (reverse topological order) that
    binds its name at module level."""
    if not metrics:
        return steps
    try:
        order = Pipeline(steps=tuple(steps), source=source).topological_order()
    except DefinitionError:  # a cycle: reported by validation; notebook order will do
        order = [step.name for step in steps]
    by_name = {step.name: step for step in steps}
    bindings: dict[str, set[str]] = {}
    for name, step in by_name.items():
        bindings[name] = set(code_names(step.code).bindings)
    assigned: dict[str, list[str]] = {}
    for metric, cell in metrics:
        owner = next((name for name in reversed(order) if metric in bindings[name]), None)
        if owner is None:
            issues.append(DefinitionIssue(
                f"metric {metric!r}: no step assigns {metric} (a pipeline metric is a "
                "variable a step defines)", cell=cell, field=f"tag {METRICS!r}"))
            continue
        assigned.setdefault(owner, []).append(metric)
    return [
        Step(header=step.header, code=f"{step.code}\n{metric_lines(assigned[step.name])}",
             cell=step.cell) if step.name in assigned else step
        for step in steps
    ]
