"""Jupyter front-ends: the ``%%mlstep`` / ``%mlpipe`` magics and the run DAG widget."""
