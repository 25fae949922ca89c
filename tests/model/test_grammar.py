from __future__ import annotations

import pytest

from mlpipe_jupyter.model.grammar import (
    parse_duration,
    parse_parameter_value,
    parse_size,
    parse_step_header,
    split_magic,
)
from mlpipe_jupyter.model.step import DatasetInput, OutputSpec, Resources, StepOutputInput


def test_full_header_parses_every_option() -> None:
    parsed = parse_step_header(
        "%%mlstep train --input raw=dataset:iris@2 data=prepare.clean --output model=dataset:m "
        "report --param C=1.0 kind=rf 'layers=[1, 2]' --after setup_db --no-reuse "
        "--hash-paths 'conf/*.yaml' --env sk --compute docker --retries 2 --timeout 5m "
        "--cpus 1.5 --memory 4g --gpus 1",
        cell=3,
    )
    assert parsed.issues == []
    header = parsed.header
    assert header is not None
    assert header.name == "train"
    assert header.inputs == (
        DatasetInput("raw", "iris", 2),
        StepOutputInput("data", "prepare", "clean"),
    )
    assert header.outputs == (OutputSpec("model", "m"), OutputSpec("report"))
    assert header.param_defaults == {"C": 1.0, "kind": "rf", "layers": [1, 2]}
    assert header.after == ("setup_db",)
    assert header.allow_reuse is False
    assert header.hash_paths == ("conf/*.yaml",)
    assert (header.env, header.compute, header.retries) == ("sk", "docker", 2)
    assert header.timeout_seconds == 300
    assert header.resources == Resources(cpus=1.5, memory_bytes=4 * 1024**3, gpus=1)


def test_option_equals_form() -> None:
    parsed = parse_step_header("s --input=x=dataset:d --timeout=30s")
    assert parsed.header is not None and parsed.issues == []
    assert parsed.header.timeout_seconds == 30


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", "needs a name"),
        ("1abc", "step name '1abc' is not valid"),
        ("s --bogus 3", "unknown option --bogus"),
        ("s --input raw", "must be NAME=dataset:DS"),
        ("s --input raw=prepare", "neither dataset:DS nor STEP.OUTPUT"),
        ("s --input raw=dataset:iris@0", "must be a number from 1"),
        ("s --param frac", "must be NAME=VALUE"),
        ("s --param x=[1,", "not a valid Python literal"),
        ("s --param class=1", "not valid"),
        ("s --output inputs", "reserved"),
        ("s --timeout soon", "not a duration"),
        ("s --memory lots", "not a size"),
        ("s --retries -1", "whole number"),
        ("s --env", "needs a value"),
        ("s --env a b", "unexpected 'b'"),
        ("s --output x --param x=1", "already used by the output 'x'"),
        ("s --no-reuse=yes", "takes no value"),
        ("s 'unclosed", "quoting error in the %%mlstep line: no closing quotation"),
    ],
)
def test_header_mistakes_are_named(line: str, expected: str) -> None:
    parsed = parse_step_header(line, cell=7)
    assert parsed.issues, line
    text = "\n".join(str(i) for i in parsed.issues)
    assert expected in text
    assert "cell 7" in text


def test_several_mistakes_in_one_line_are_all_reported() -> None:
    parsed = parse_step_header("s --bogus --param a --timeout never")
    assert len(parsed.issues) == 3


def test_values() -> None:
    assert parse_parameter_value("0.5") == 0.5
    assert parse_parameter_value("rf") == "rf"
    assert parse_parameter_value("'a b'") == "a b"
    assert parse_parameter_value("True") is True
    assert parse_duration("2h") == 7200


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("2.5", 2.5), ("30s", 30), ("10sec", 10), ("5m", 300), ("5 min", 300),
     ("1.5h", 5400), ("2hr", 7200), ("2d", 172800), ("1h30m", 5400), ("1H 30M", 5400),
     ("1d2h3m4s", 93784), (" 15m ", 900)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [("soon", "'soon' is not a duration"), ("1w", "not a duration"), ("-5m", "not a duration"),
     ("1h30", "not a duration"), ("1 5m", "not a duration"), ("2 hours", "not a duration"),
     ("0s", "'0s' must be more than zero"), ("0", "must be more than zero")],
)
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


def test_sizes() -> None:
    assert parse_size("512m") == 512 * 1024**2
    assert parse_size("1.5GiB") == int(1.5 * 1024**3)


def test_split_magic() -> None:
    assert split_magic("\n%%mlstep a --output o\nx = 1") == ("%%mlstep", "a --output o", "x = 1")
    assert split_magic("%%mlsetup\nimport os") == ("%%mlsetup", "", "import os")
    assert split_magic("x = 1") == (None, "", "x = 1")
    assert split_magic("%%mlstepper a")[0] is None


def test_every_option_is_documented() -> None:
    from pathlib import Path

    from mlpipe_jupyter.model.grammar import OPTIONS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "grammar.md").read_text()
    missing = [name for name in OPTIONS if f"`{name}" not in doc]
    assert missing == []
