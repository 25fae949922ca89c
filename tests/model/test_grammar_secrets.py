"""``--secret NAME[=ENV_VAR]`` in the %%mlstep grammar."""

from __future__ import annotations

from mlpipe_jupyter.model.grammar import parse_step_header, secret_env_var
from mlpipe_jupyter.model.step import SecretUse


def test_secret_option() -> None:
    parsed = parse_step_header("%%mlstep s --secret db.password api-key=TOKEN --secret x_1")
    assert parsed.issues == []
    assert parsed.header is not None
    assert parsed.header.secrets == (SecretUse("db.password", "DB_PASSWORD"),
                                     SecretUse("api-key", "TOKEN"), SecretUse("x_1", "X_1"))
    assert secret_env_var("a-b.c") == "A_B_C"


def test_secret_mistakes_are_reported_all_at_once() -> None:
    parsed = parse_step_header("%%mlstep s --secret 'bad name' --secret ok=1X "
                               "--secret a=SAME --secret b=SAME", cell=3)
    messages = [str(issue) for issue in parsed.issues]
    assert any("--secret bad name: secret name 'bad name' is not valid" in m for m in messages)
    assert any("'1X' is not an environment variable name" in m for m in messages)
    assert any("environment variable SAME is already secret 'a'" in m for m in messages)
    assert all(m.startswith("cell 3, step 's'") for m in messages)
