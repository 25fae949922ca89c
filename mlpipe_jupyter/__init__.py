"""mlpipe_jupyter: notebook-native machine-learning pipelines for Jupyter.

Inside a step::

    from mlpipe_jupyter import context
    df = context.inputs.raw.to_pandas()
    context.log("accuracy", 0.93)
"""

from __future__ import annotations

from typing import Any

from mlpipe_jupyter.step_context import ContextProxy, log

__version__ = "0.1.0"

context = ContextProxy()


def load_variable(ref: str, run: str | None = None, notebook: Any = None) -> Any:
    """The variable ``"STEP.NAME"`` that a pipeline run saved (``%mlpipe load``): from run
    ``run``, by default this notebook's latest run in which STEP succeeded or was reused."""
    from mlpipe_jupyter.interactive import load_variable as load  # the store: not in steps

    return load(ref, run, notebook)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext mlpipe_jupyter``: register ``%%mlstep``, ``%%mlsetup`` and ``%mlpipe``."""
    # imported here so that `import mlpipe_jupyter` (done by every step) stays light
    from mlpipe_jupyter.jupyter.magics import load_ipython_extension as load

    load(ipython)


__all__ = ["__version__", "context", "load_ipython_extension", "load_variable", "log"]
