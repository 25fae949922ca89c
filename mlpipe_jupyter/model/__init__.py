"""The pure pipeline model: steps, pipelines, parameters, fingerprints. No I/O here."""

from mlpipe_jupyter.model.fingerprint import FingerprintComponents, describe_changes
from mlpipe_jupyter.model.grammar import parse_step_header
from mlpipe_jupyter.model.pipeline import Pipeline
from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.model.step import (
    DatasetInput,
    OutputSpec,
    Resources,
    SetupCell,
    Step,
    StepHeader,
    StepOutputInput,
)

__all__ = [
    "DatasetInput",
    "FingerprintComponents",
    "OutputSpec",
    "Pipeline",
    "Resources",
    "RunStatus",
    "SetupCell",
    "Step",
    "StepHeader",
    "StepOutputInput",
    "StepStatus",
    "describe_changes",
    "parse_step_header",
]
