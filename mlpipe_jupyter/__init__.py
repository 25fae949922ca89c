"""mlpipe_jupyter: notebook-native machine-learning pipelines for Jupyter.

Inside a step::

    from mlpipe_jupyter import context
    df = context.inputs.raw.to_pandas()
    context.log("accuracy", 0.93)
"""

from __future__ import annotations

from mlpipe_jupyter.step_context import ContextProxy, log

__version__ = "0.1.0"

context = ContextProxy()

__all__ = ["__version__", "context", "log"]
