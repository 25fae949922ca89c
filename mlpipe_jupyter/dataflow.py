"""Which variables flow along which edge of a pipeline (static analysis, no kernel).

Filled in next: pyflakes finds the names a step uses before defining them; ``ast`` finds the
names a step defines at module level.
"""

from __future__ import annotations

from mlpipe_jupyter.model.pipeline import Pipeline


def resolve_flows(pipeline: Pipeline) -> Pipeline:
    """``pipeline`` with its variable flows found and checked (issues in ``parse_issues``)."""
    return pipeline
