"""Kubeflow Kale's cell tags as a pipeline (being written; see issue 14)."""
