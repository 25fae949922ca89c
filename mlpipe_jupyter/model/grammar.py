"""The ``%%mlstep`` line grammar: the one place that defines it.

A step cell starts with a header line::

    %%mlstep NAME [OPTION ...]

Options (each may also be written ``--option=value``; repeatable options accept several
values in a row, up to the next ``--option``)::

    --input NAME=dataset:DS[@VERSION]   an input bound to a registered dataset (latest
                                        version unless @VERSION is given)
    --input NAME=STEP.OUTPUT            an input bound to an upstream step's output folder;
                                        this is what makes a DAG edge
    --output NAME                       an output folder the step writes
    --output NAME=dataset:DS            ... registered as a new version of dataset DS when
                                        the step succeeds
    --param NAME=VALUE                  a pipeline parameter with its default; VALUE is a
                                        Python literal (0.8, 3, True, "a b", [1, 2]) or a
                                        bare word taken as a string (rf)
    --use STEP.NAME                     receive variable NAME as STEP left it (STEP runs
                                        first; the value is saved and loaded for you)
    --after STEP                        run after STEP although no data flows between them
    --no-reuse                          always execute; never reuse a previous result
    --hash-paths GLOB                   files (relative to the notebook) whose content is
                                        part of the step's fingerprint
    --env NAME                          the environment the step runs in
    --image IMAGE                       the container image of a docker step (instead of
                                        --env; papermill and ipykernel are added if missing)
    --compute NAME                      the compute target (default: local)
    --network                           give a container step network access (off by default)
    --retries N                         re-execute a failed step up to N more times
    --timeout DURATION                  fail the step after DURATION (30, 30s, 5m, 2h)
    --cpus N  --memory SIZE  --gpus N   resource requests (SIZE: 512m, 4g, 1.5GiB, bytes)
    --secret NAME[=ENV_VAR]             the secret NAME in the step's environment variable
                                        ENV_VAR (default: NAME upper-cased, other characters
                                        than letters and digits as _); docs/secrets.md
    --label KEY=VALUE                   metadata kept with the step (Kale's label: tag)
    --annotation KEY=VALUE              metadata kept with the step (Kale's annotation: tag)
    --run-if RULE                       which upstream outcomes let the step run:
                                        all_succeeded (default), all_done, any_failed
    --if "EXPRESSION"                   run only when EXPRESSION over upstream metrics
                                        (STEP.METRIC) and parameters is true; quote it
    --no-run                            (magic only) register the step without running it

Names of steps, inputs, outputs and parameters are Python identifiers (they become
attributes and variables in the step); dataset names may also contain ``-`` and ``.``.
``%%mlsetup`` cells take no options.

``parse_step_header`` returns a ``StepHeader`` and every issue found in the line, so that a
notebook with several mistakes is reported all at once.
"""

from __future__ import annotations

import ast
import keyword
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlpipe_jupyter.errors import DefinitionIssue
from mlpipe_jupyter.model.conditions import ALL_SUCCEEDED, parse_condition, parse_run_if
from mlpipe_jupyter.model.step import (
    DatasetInput,
    OutputSpec,
    Resources,
    SecretUse,
    StepHeader,
    StepInput,
    StepOutputInput,
    VariableUse,
)

STEP_MAGIC = "%%mlstep"
SETUP_MAGIC = "%%mlsetup"

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# A secret's name (``mlpipe secret set NAME``); Kale's secret:NAME:KEY:ENV maps to NAME.KEY.
SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names a step's code already uses for the injected context.
RESERVED_NAMES = frozenset({"inputs", "outputs", "context", "mlpipe_jupyter"})
RESERVED_PREFIX = "mlpipe_"  # the folders of handed-over variables (model.step.VARIABLES_OUTPUT)

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_DURATION_PART = re.compile(rf"({_NUMBER})\s*(sec|min|hr|[smhd])\s*", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def is_identifier(name: str) -> bool:
    return bool(IDENTIFIER.match(name)) and not keyword.iskeyword(name)


def check_identifier(name: str, what: str) -> str | None:
    """The problem with ``name`` as a step/input/output/parameter name, or None."""
    if not IDENTIFIER.match(name) or keyword.iskeyword(name):
        return (
            f"{what} name {name!r} is not valid: use letters, digits and '_', "
            "not starting with a digit, and not a Python keyword"
        )
    if what != "step" and name in RESERVED_NAMES:
        return f"{what} name {name!r} is reserved ({', '.join(sorted(RESERVED_NAMES))})"
    if what in ("input", "output", "parameter") and name.startswith(RESERVED_PREFIX):
        return f"{what} name {name!r} is reserved: names starting with {RESERVED_PREFIX!r} are mlpipe's"
    return None


def parse_parameter_value(text: str) -> Any:
    """A parameter value: a Python literal, or a bare word taken as a string.

    Raises ValueError when the text looks like a literal (quotes, brackets) but is not one,
    so that ``[1, 2`` is an error instead of silently becoming a string.
    """
    stripped = text.strip()
    if stripped == "":
        raise ValueError("empty value (write '' for an empty string)")
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError):
        if stripped[0] in "[{(\"'" or stripped[-1] in "]})\"'":
            raise ValueError(f"{text!r} is not a valid Python literal") from None
        return stripped


def parse_duration(text: str) -> float:
    """Seconds from a bare number of seconds (``30``, ``2.5``) or parts with units added up.

    Units: ``s``/``sec``, ``m``/``min``, ``h``/``hr``, ``d``, in any case; numbers may have
    decimals; spaces may separate a number from its unit and one part from the next:
    ``30s``, ``5m``, ``1.5h``, ``1h30m``, ``1h 30m``, ``2d``. The one duration grammar of
    the project: ``--timeout`` here, and the schedule options ``--every``,
    ``--retry-backoff`` and ``--timeout`` (model.schedule_policies).
    """
    cleaned = text.strip()
    if re.fullmatch(_NUMBER, cleaned):
        seconds = float(cleaned)
    elif re.fullmatch(f"(?:{_DURATION_PART.pattern})+", cleaned, re.IGNORECASE):
        seconds = sum(
            float(number) * _DURATION_UNITS[unit.lower()]
            for number, unit in _DURATION_PART.findall(cleaned)
        )
    else:
        raise ValueError(f"{text!r} is not a duration (examples: 30, 30s, 5m, 1h30m, 2d)")
    if seconds <= 0:
        raise ValueError(f"{text!r} must be more than zero")
    return seconds


def parse_size(text: str) -> int:
    """Bytes from ``512m``, ``4g``, ``1.5GiB`` or a plain byte count."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 512m, 4g, 1.5GiB)")
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"{text!r} must be more than zero")
    return size


def parse_input(text: str) -> StepInput:
    """``NAME=dataset:DS[@VERSION]`` or ``NAME=STEP.OUTPUT``; ValueError says what is wrong."""
    name, sep, source = text.partition("=")
    if not sep or not name or not source:
        raise ValueError(f"{text!r} must be NAME=dataset:DS[@VERSION] or NAME=STEP.OUTPUT")
    problem = check_identifier(name, "input")
    if problem:
        raise ValueError(problem)
    if source.startswith("dataset:"):
        ref = source[len("dataset:") :]
        dataset, at, version_text = ref.partition("@")
        if not DATASET_NAME.match(dataset):
            raise ValueError(f"dataset name {dataset!r} is not valid")
        version: int | None = None
        if at:
            if not version_text.lstrip("v").isdigit() or int(version_text.lstrip("v")) < 1:
                raise ValueError(f"dataset version {version_text!r} must be a number from 1")
            version = int(version_text.lstrip("v"))
        return DatasetInput(name=name, dataset=dataset, version=version)
    step, dot, output = source.partition(".")
    if not dot:
        raise ValueError(
            f"{source!r} is neither dataset:DS nor STEP.OUTPUT (input {name!r})"
        )
    for part, what in ((step, "step"), (output, "output")):
        problem = check_identifier(part, what)
        if problem:
            raise ValueError(problem)
    return StepOutputInput(name=name, step=step, output=output)


def parse_output(text: str) -> OutputSpec:
    """``NAME`` or ``NAME=dataset:DS``."""
    name, sep, target = text.partition("=")
    problem = check_identifier(name, "output")
    if problem:
        raise ValueError(problem)
    if not sep:
        return OutputSpec(name=name)
    if not target.startswith("dataset:") or not DATASET_NAME.match(target[8:]):
        raise ValueError(f"{text!r} must be NAME or NAME=dataset:DS to register it")
    return OutputSpec(name=name, register_as=target[8:])


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE as in ``parse_parameter_value``."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r} must be NAME=VALUE")
    problem = check_identifier(name, "parameter")
    if problem:
        raise ValueError(problem)
    return name, parse_parameter_value(value)


def parse_use(text: str) -> VariableUse:
    """``STEP.NAME``: variable NAME as step STEP left it."""
    step, dot, name = text.partition(".")
    if not dot or not step or not name:
        raise ValueError(f"{text!r} must be STEP.NAME (the step that defines the variable, "
                         "a dot, the variable's name)")
    for part, what in ((step, "step"), (name, "variable")):
        problem = check_identifier(part, what)
        if problem:
            raise ValueError(problem)
    return VariableUse(step=step, name=name)


def check_secret_name(name: str) -> str | None:
    """The problem with ``name`` as a secret's name, or None."""
    if not SECRET_NAME.match(name):
        return (f"secret name {name!r} is not valid: use letters, digits, '_', '.' and '-', "
                "not starting with '.' or '-'")
    return None


def secret_env_var(name: str) -> str:
    """The default environment variable of a secret: its name upper-cased, every character
    other than a letter or digit as ``_`` (``db.password`` -> ``DB_PASSWORD``)."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def parse_secret(text: str) -> SecretUse:
    """``NAME`` or ``NAME=ENV_VAR``: the secret NAME in environment variable ENV_VAR."""
    name, sep, env = text.partition("=")
    problem = check_secret_name(name)
    if problem:
        raise ValueError(problem)
    if sep and not ENV_VAR_NAME.match(env):
        raise ValueError(f"{env!r} is not an environment variable name (letters, digits "
                         "and '_', not starting with a digit)")
    env = env if sep else secret_env_var(name)
    if not ENV_VAR_NAME.match(env):
        raise ValueError(f"secret {name!r} needs an environment variable: write "
                         f"{name}=ENV_VAR")
    return SecretUse(name=name, env=env)


def parse_key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` metadata (labels, annotations): any non-empty key, any value."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{text!r} must be KEY=VALUE")
    return key.strip(), value


def _parse_image(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not an image name (examples: python:3.12-slim, "
                         "registry.example.com/team/image:tag)")
    return text


def _parse_count(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} must be a whole number from 0")
    return int(text)


def _parse_positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} must be a number") from None
    if value <= 0:
        raise ValueError(f"{text!r} must be more than zero")
    return value


def _parse_step_name(text: str) -> str:
    problem = check_identifier(text, "step")
    if problem:
        raise ValueError(problem)
    return text


@dataclass(frozen=True)
class _Option:
    key: str  # the StepHeader field it fills
    parse: Callable[[str], Any] | None  # None: a flag taking no value
    repeatable: bool = False


OPTIONS: dict[str, _Option] = {
    "--input": _Option("inputs", parse_input, repeatable=True),
    "--output": _Option("outputs", parse_output, repeatable=True),
    "--param": _Option("params", parse_param, repeatable=True),
    "--after": _Option("after", _parse_step_name, repeatable=True),
    "--use": _Option("uses", parse_use, repeatable=True),
    "--image": _Option("image", _parse_image),
    "--secret": _Option("secrets", parse_secret, repeatable=True),
    "--label": _Option("labels", parse_key_value, repeatable=True),
    "--annotation": _Option("annotations", parse_key_value, repeatable=True),
    "--hash-paths": _Option("hash_paths", str, repeatable=True),
    "--no-reuse": _Option("no_reuse", None),
    "--no-run": _Option("no_run", None),
    "--network": _Option("network", None),
    "--env": _Option("env", str),
    "--compute": _Option("compute", str),
    "--retries": _Option("retries", _parse_count),
    "--timeout": _Option("timeout_seconds", parse_duration),
    "--cpus": _Option("cpus", _parse_positive_float),
    "--memory": _Option("memory_bytes", parse_size),
    "--gpus": _Option("gpus", _parse_count),
    "--run-if": _Option("run_if", parse_run_if),
    "--if": _Option("condition", parse_condition),
}


@dataclass
class ParsedHeader:
    """The result of parsing one header: the header (None without a step name) and every
    issue; a header with issues holds only the options that parsed and must not be run."""

    header: StepHeader | None
    issues: list[DefinitionIssue] = field(default_factory=list)


def parse_step_header(line: str, cell: int | None = None) -> ParsedHeader:
    """Parse the text after ``%%mlstep`` (the magic word itself may be included)."""
    text = line.strip()
    if text.startswith(STEP_MAGIC):
        text = text[len(STEP_MAGIC) :]
    issues: list[DefinitionIssue] = []

    def issue(message: str, step: str | None, option: str | None = None) -> None:
        issues.append(DefinitionIssue(message, step=step, cell=cell, field=option))

    try:
        tokens = shlex.split(text, comments=False, posix=True)
    except ValueError as exc:  # shlex says "No closing quotation" / "No escaped character"
        issue(f"quoting error in the {STEP_MAGIC} line: {str(exc).lower()}; close every quote, "
              "and quote a value with spaces or brackets whole: --param 'layers=[64, 32]'",
              _leading_name(text))
        return ParsedHeader(None, issues)
    if not tokens or tokens[0].startswith("-"):
        issue("the step needs a name: %%mlstep NAME [options]", None)
        return ParsedHeader(None, issues)
    name = tokens[0]
    problem = check_identifier(name, "step")
    if problem:
        issue(problem, None)
    values: dict[str, Any] = {}
    index = 1
    while index < len(tokens):
        token = tokens[index]
        index += 1
        option_name, eq, inline_value = token.partition("=")
        if not option_name.startswith("--"):
            issue(f"unexpected {token!r}: options start with --", name)
            continue
        option = OPTIONS.get(option_name)
        if option is None:
            known = ", ".join(sorted(OPTIONS))
            issue(f"unknown option {option_name} (known: {known})", name, option_name)
            while index < len(tokens) and not tokens[index].startswith("--"):
                index += 1  # its values: one mistake, one message
            continue
        if option.parse is None:
            if eq:
                issue("takes no value", name, option_name)
            values[option.key] = True
            continue
        raw: list[str] = [inline_value] if eq else []
        while index < len(tokens) and not tokens[index].startswith("--"):
            if raw and not option.repeatable:
                break
            raw.append(tokens[index])
            index += 1
        if not raw:
            issue("needs a value", name, option_name)
            continue
        if option_name == "--if" and index < len(tokens) and not tokens[index].startswith("--"):
            while index < len(tokens) and not tokens[index].startswith("--"):
                raw[0] += " " + tokens[index]  # one mistake, one message
                index += 1
            issue(f"quote the whole condition as one word: --if \"{raw[0]}\"", name,
                  option_name)
            continue
        for item in raw:
            try:
                parsed = option.parse(item)
            except ValueError as exc:
                issue(str(exc), name, f"{option_name} {item}")
                continue
            if option.repeatable:
                values.setdefault(option.key, []).append(parsed)
            elif option.key in values:
                issue("given more than once", name, option_name)
            else:
                values[option.key] = parsed
    if index < len(tokens):  # a non-repeatable option was followed by extra words
        issue(f"unexpected {' '.join(tokens[index:])!r}", name)
    _check_unique_names(values, name, cell, issues)
    if values.get("env") and values.get("image"):
        issue("give --env or --image, not both (an environment already names its image)",
              name, "--image")
    # Built from the valid parts even when there are issues, so that the rest of the
    # notebook can still be checked against it and every mistake reported at once.
    header = StepHeader(
        name=name,
        inputs=tuple(values.get("inputs", [])),
        outputs=tuple(values.get("outputs", [])),
        params=tuple(values.get("params", [])),
        after=tuple(values.get("after", [])),
        allow_reuse=not values.get("no_reuse", False),
        hash_paths=tuple(values.get("hash_paths", [])),
        env=values.get("env"),
        compute=values.get("compute"),
        retries=values.get("retries", 0),
        timeout_seconds=values.get("timeout_seconds"),
        resources=Resources(
            cpus=values.get("cpus"),
            memory_bytes=values.get("memory_bytes"),
            gpus=values.get("gpus"),
        ),
        no_run=values.get("no_run", False),
        network=values.get("network", False),
        uses=tuple(dict.fromkeys(values.get("uses", []))),
        image=values.get("image"),
        labels=tuple(values.get("labels", [])),
        annotations=tuple(values.get("annotations", [])),
        secrets=tuple(dict.fromkeys(values.get("secrets", []))),
        run_if=values.get("run_if", ALL_SUCCEEDED),
        condition=values.get("condition"),
    )
    return ParsedHeader(header, issues)


def _leading_name(text: str) -> str | None:
    """The step name at the start of a header that cannot be split, to name it in errors."""
    first = text.split(maxsplit=1)[0] if text.strip() else ""
    return first if is_identifier(first) else None


def _check_unique_names(
    values: dict[str, Any], step: str, cell: int | None, issues: list[DefinitionIssue]
) -> None:
    """Inputs, outputs and parameters share the step's namespace: no name twice."""
    variables: dict[str, str] = {}
    for use in values.get("secrets", []):
        if variables.get(use.env, use.name) != use.name:
            issues.append(DefinitionIssue(
                f"environment variable {use.env} is already secret {variables[use.env]!r}: "
                f"give one of them another variable ({use.name}=OTHER_NAME)",
                step=step, cell=cell, field=f"--secret {use.name}"))
        variables.setdefault(use.env, use.name)
    seen: dict[str, str] = {}
    groups = (
        ("input", [i.name for i in values.get("inputs", [])]),
        ("output", [o.name for o in values.get("outputs", [])]),
        ("parameter", [p[0] for p in values.get("params", [])]),
    )
    for what, names in groups:
        for item in names:
            if item in seen:
                issues.append(
                    DefinitionIssue(
                        f"{what} name {item!r} is already used by {seen[item]} {item!r}",
                        step=step,
                        cell=cell,
                        field=f"--{what if what != 'parameter' else 'param'} {item}",
                    )
                )
            else:
                seen[item] = f"the {what}" if what != "parameter" else "the parameter"


def split_magic(source: str) -> tuple[str | None, str, str]:
    """Split a cell into (magic, header line, body).

    magic is ``%%mlstep``, ``%%mlsetup`` or None for an ordinary cell. Leading blank lines
    are ignored, as IPython does for cell magics.
    """
    stripped = source.lstrip("\n")
    first, _, body = stripped.partition("\n")
    word = first.split(maxsplit=1)[0] if first.strip() else ""
    if word in (STEP_MAGIC, SETUP_MAGIC):
        return word, first[len(word) :].strip(), body
    return None, "", source
