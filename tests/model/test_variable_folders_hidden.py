"""The folders that carry handed-over variables (``mlpipe_variables``) are mlpipe's: no
message, explanation or listing shows them as the user's inputs or outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe_jupyter.dataflow import resolve_flows
from mlpipe_jupyter.errors import DefinitionError
from mlpipe_jupyter.model.fingerprint import FingerprintComponents, describe_changes
from mlpipe_jupyter.notebook import pipeline_from_cells
from mlpipe_jupyter.store import Store
from tests.conftest import run_cli, write_notebook


def test_why_does_not_name_the_variables_folder() -> None:
    before = FingerprintComponents(code="c", setup="s", settings={"outputs": ["clean"]})
    after = FingerprintComponents(code="c", setup="s", settings={
        "outputs": ["clean", "mlpipe_variables"], "variables": ["df"]})
    assert describe_changes(before, after) == ["setting 'variables' added (['df'])"]
    only = FingerprintComponents(code="c", setup="s", settings={"outputs": ["mlpipe_variables"],
                                                                 "variables": ["df"]})
    assert describe_changes(after, only) == [
        "setting 'outputs' changed: ['clean'] -> []"]


def test_an_unknown_output_lists_the_users_outputs_only() -> None:
    pipeline = resolve_flows(pipeline_from_cells(list(enumerate([
        "%%mlstep a --output o\ndf = 1",
        "%%mlstep b --use a.df --input x=a.nope\nprint(df)",
    ], start=1)), source="nb.ipynb"))
    with pytest.raises(DefinitionError) as raised:
        pipeline.validate({})
    assert "step 'a' has no output 'nope' (its outputs: o)" in str(raised.value)


@pytest.mark.slow
def test_published_steps_show_what_they_use_not_the_folders(
    store: Store, workspace_dir: Path,
) -> None:
    write_notebook(workspace_dir / "flow.ipynb", [
        "%%mlstep a --output o\ndf = 1",
        "%%mlstep b --use a.df --output out\nprint(df)",
    ])
    assert run_cli("publish", "flow.ipynb", "--name", "flow", cwd=workspace_dir).returncode == 0
    shown = run_cli("published", "show", "flow", cwd=workspace_dir).stdout
    assert "step a: in -; out o\n" in shown
    assert "step b: in -; out out; uses a.df\n" in shown
    assert "mlpipe_variables" not in shown
