"""%%mlstep, %%mlsetup and %mlpipe through a real IPython shell (no step kernels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

from mlpipe_jupyter.interactive import find_notebook, interactive_notebook_path
from mlpipe_jupyter.step_context import current
from mlpipe_jupyter.store import Store

PREPARE = (
    "%%mlstep prepare --input raw=dataset:numbers --output clean --param frac=0.5\n"
    "import pandas as pd\n"
    "rows = len(pd.read_csv(inputs.raw / 'numbers.csv'))\n"
    "(outputs.clean / 'clean.csv').write_text(f'rows\\n{rows}\\n')\n"
    "context.log('rows', rows)\n"
)
TRAIN = (
    "%%mlstep train --input data=prepare.clean --output model --param C=2.0\n"
    "seen = sorted(p.name for p in inputs.data.iterdir())\n"
    "(outputs.model / 'model.txt').write_text(str(C))\n"
)


def usage_error(result: Any) -> str:
    """The message of the UsageError a cell ended with."""
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    return str(result.error_in_exec)


def test_step_cell_binds_inputs_outputs_and_parameters(shell: Any, store: Store) -> None:
    result = shell.run_cell(PREPARE)
    assert result.success, result.error_in_exec
    ns = shell.user_ns
    assert ns["frac"] == 0.5
    assert ns["rows"] == 3
    assert Path(ns["inputs"].raw) == store.datasets.get("numbers").path
    scratch = store.workspace.root / "scratch" / "prepare" / "clean"
    assert Path(ns["outputs"].clean) == scratch
    assert (scratch / "clean.csv").read_text() == "rows\n3\n"
    # the step context is active, interactive, and context.log works
    assert current().interactive and current().step == "prepare"
    assert current().metrics == {"rows": 3}
    assert ns["context"].parameters == {"frac": 0.5}


def test_scratch_outputs_are_emptied_on_each_run(shell: Any, store: Store) -> None:
    assert shell.run_cell(PREPARE).success
    stale = store.workspace.root / "scratch" / "prepare" / "clean" / "stale.txt"
    stale.write_text("from an earlier run")
    assert shell.run_cell(PREPARE).success
    assert not stale.exists()


def test_downstream_cell_reads_the_interactive_upstream_output(shell: Any) -> None:
    assert shell.run_cell(PREPARE).success
    result = shell.run_cell(TRAIN)
    assert result.success, result.error_in_exec
    assert shell.user_ns["seen"] == ["clean.csv"]
    assert shell.user_ns["C"] == 2.0


def test_upstream_not_run_says_what_to_do(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = shell.run_cell(TRAIN)
    message = usage_error(result)
    assert message == (
        "step 'train', --input data=prepare.clean: step 'prepare' has no result yet: "
        "run step prepare first (or `%mlpipe run`)"
    )
    assert "Traceback" not in capsys.readouterr().err
    assert "seen" not in shell.user_ns  # the body did not run


def test_bad_header_is_one_line_naming_step_and_option(
    shell: Any, magics: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    result = shell.run_cell("%%mlstep prepare --outptu clean\nran = True\n")
    message = usage_error(result)
    assert message.startswith("step 'prepare', --outptu: unknown option --outptu")
    assert "\n" not in message
    err = capsys.readouterr().err
    assert "Traceback" not in err and "UsageError: step 'prepare'" in err
    assert "ran" not in shell.user_ns
    assert magics.registry.step_names == []  # a broken header registers nothing


def test_bad_parameter_value_names_the_option(shell: Any) -> None:
    message = usage_error(shell.run_cell("%%mlstep prepare --param frac=[1,\npass\n"))
    assert message.startswith("step 'prepare', --param frac=[1,:")


def test_unknown_dataset_is_one_line(shell: Any) -> None:
    result = shell.run_cell("%%mlstep prepare --input raw=dataset:nope --output clean\npass\n")
    assert usage_error(result) == (
        "step 'prepare', --input raw=dataset:nope: no dataset named 'nope' "
        "(registered: numbers)"
    )


def test_steps_register_by_name_in_cell_order(shell: Any, magics: Any) -> None:
    assert shell.run_cell("%%mlsetup\nimport math\n").success
    assert shell.run_cell(PREPARE).success
    assert shell.run_cell(TRAIN).success
    assert shell.run_cell(PREPARE.replace("frac=0.5", "frac=0.25")).success  # re-run: replaced
    registry = magics.registry
    assert registry.step_names == ["prepare", "train"]
    assert [c.kind for c in registry.cells] == ["setup", "step", "step"]
    assert "frac=0.25" in registry.cells[1].source
    pipeline = registry.pipeline()
    pipeline.validate({"numbers": [1]})
    assert pipeline.topological_order() == ["prepare", "train"]
    assert pipeline.upstream("train") == {"prepare"}
    assert [s.code for s in pipeline.setup] == ["import math\n"]


def test_no_run_only_registers(shell: Any, magics: Any, store: Store) -> None:
    result = shell.run_cell(PREPARE.replace("--param", "--no-run --param"))
    assert result.success
    assert "rows" not in shell.user_ns and "frac" not in shell.user_ns
    assert magics.registry.step_names == ["prepare"]
    assert not (store.workspace.root / "scratch" / "prepare").exists()


def test_failing_step_cell_fails_the_cell_and_keeps_downstream_out(shell: Any) -> None:
    failing = "%%mlstep prepare --output clean\nraise ValueError('boom')\n"
    message = usage_error(shell.run_cell(failing))
    assert message.startswith("step 'prepare' failed (see above)")
    # its scratch output is incomplete: a downstream cell must not read it
    assert "has no result yet" in usage_error(shell.run_cell(TRAIN))


def test_setup_cell_runs_and_rejects_options(shell: Any, magics: Any) -> None:
    assert shell.run_cell("%%mlsetup\nrows = 42\n").success
    assert shell.user_ns["rows"] == 42
    assert usage_error(shell.run_cell("%%mlsetup --fast\npass\n")) == (
        "%%mlsetup takes no options (got '--fast')"
    )
    assert len(magics.registry.cells) == 1


def test_same_cell_id_replaces_a_renamed_step(shell: Any, magics: Any) -> None:
    shell.run_cell("%%mlstep first --no-run\npass\n", cell_id="abc")
    shell.run_cell("%%mlstep second --no-run\npass\n", cell_id="abc")
    assert magics.registry.step_names == ["second"]


def test_mlpipe_bad_arguments_are_usage_errors(shell: Any) -> None:
    assert "unrecognized arguments" in usage_error(shell.run_cell("%mlpipe run --bogus"))
    assert "invalid choice" in usage_error(shell.run_cell("%mlpipe explode"))


def test_mlpipe_run_without_steps_says_so(shell: Any) -> None:
    message = usage_error(shell.run_cell("%mlpipe run"))
    assert message.startswith("no steps registered in this kernel")


def test_mlpipe_run_reports_definition_errors_in_the_cell(shell: Any) -> None:
    shell.run_cell("%%mlstep train --input data=prepare.clean --no-run\npass\n")
    message = usage_error(shell.run_cell("%mlpipe run --wait"))
    assert "1 pipeline definition error; nothing was run" in message
    assert "step 'prepare' is not defined" in message


def test_mlpipe_run_notify_specs_are_checked_before_the_run(shell: Any) -> None:
    shell.run_cell("%%mlstep solo --output o --no-run\npass\n")
    message = usage_error(shell.run_cell(
        "%mlpipe run --wait --notify sms:1 --notify email:ops@example.com --notify-on often"))
    assert "2 pipeline definition errors; nothing was run" in message
    assert "--notify: 'sms:1': expected webhook:URL" in message
    assert "--notify-on: 'often'" in message


def test_mlpipe_runs_and_status_before_any_run(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shell.run_cell("%mlpipe runs --all").success
    assert "no runs yet" in capsys.readouterr().out
    assert usage_error(shell.run_cell("%mlpipe status")) == "there are no runs in this workspace yet"


def test_find_notebook_from_kernel_hints(tmp_path: Path) -> None:
    notebook = tmp_path / "work" / "analysis.ipynb"
    notebook.parent.mkdir()
    notebook.write_text("{}")
    # jupyter_server gives a path relative to its root; the kernel runs in the notebook's folder
    assert find_notebook({"__session__": "work/analysis.ipynb"}, {}, notebook.parent) == notebook
    assert find_notebook({}, {"JPY_SESSION_NAME": str(notebook)}, tmp_path) == notebook
    assert find_notebook({"__vsc_ipynb_file__": str(notebook)}, {}, tmp_path) == notebook
    assert find_notebook({"__session__": "missing.ipynb"}, {}, tmp_path) is None
    assert find_notebook({"__session__": "console-1-abc"}, {}, tmp_path) is None
    assert interactive_notebook_path(tmp_path).parent == tmp_path


def test_a_gated_cell_run_by_hand_runs_and_says_so(shell: Any,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    result = shell.run_cell(
        '%%mlstep deploy --after evaluate --if "evaluate.accuracy >= 0.9" --run-if all_done\n'
        "deployed = True")
    assert result.success, result.error_in_exec
    assert shell.user_ns["deployed"] is True
    out = capsys.readouterr().out
    assert "note: --if evaluate.accuracy >= 0.9 and --run-if all_done apply in pipeline runs" in out
