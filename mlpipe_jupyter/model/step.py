"""Pure data describing one pipeline step (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlpipe_jupyter.model.conditions import ALL_SUCCEEDED, Condition


@dataclass(frozen=True)
class DatasetInput:
    """An input bound to a registered dataset: ``NAME=dataset:DS[@VERSION]``."""

    name: str
    dataset: str
    version: int | None = None  # None: the latest version at run time

    def describe(self) -> str:
        version = f"@{self.version}" if self.version is not None else ""
        return f"{self.name}=dataset:{self.dataset}{version}"


@dataclass(frozen=True)
class StepOutputInput:
    """An input bound to an upstream step's output folder: ``NAME=STEP.OUTPUT``."""

    name: str
    step: str
    output: str

    def describe(self) -> str:
        return f"{self.name}={self.step}.{self.output}"


StepInput = DatasetInput | StepOutputInput

# The output folder a step saves its handed-over variables in, and the prefix of the inputs
# a consumer reads them from (``model.dataflow`` adds both; users cannot name theirs so).
VARIABLES_OUTPUT = "mlpipe_variables"
VARIABLES_INPUT_PREFIX = "mlpipe_variables_from_"


@dataclass(frozen=True)
class VariableUse:
    """A variable a step receives from another step: ``--use STEP.NAME``."""

    step: str
    name: str

    def describe(self) -> str:
        return f"{self.step}.{self.name}"


@dataclass(frozen=True)
class SecretUse:
    """A secret a step receives as an environment variable: ``--secret NAME[=ENV_VAR]``.
    Only the names travel; the value is resolved where the step runs (docs/secrets.md)."""

    name: str  # the secret's name in the secret store (letters, digits, ``_ . -``)
    env: str  # the environment variable of the step's kernel that holds its value

    def describe(self) -> str:
        return f"{self.name}={self.env}"


@dataclass(frozen=True)
class OutputSpec:
    """A folder the step writes; ``register_as`` makes it a dataset version on success."""

    name: str
    register_as: str | None = None

    def describe(self) -> str:
        return f"{self.name}=dataset:{self.register_as}" if self.register_as else self.name


@dataclass(frozen=True)
class Resources:
    """Resource requests. Executors that cannot honour them say so; none change results."""

    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: int | None = None


@dataclass(frozen=True)
class StepHeader:
    """Everything a ``%%mlstep`` line says about a step."""

    name: str
    inputs: tuple[StepInput, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()  # ordered (name, default) pairs
    after: tuple[str, ...] = ()
    allow_reuse: bool = True
    hash_paths: tuple[str, ...] = ()
    env: str | None = None
    compute: str | None = None
    retries: int = 0
    timeout_seconds: float | None = None
    resources: Resources = field(default_factory=Resources)
    no_run: bool = False  # used by the %%mlstep magic only: register without executing
    network: bool = False  # container steps get no network unless they ask
    uses: tuple[VariableUse, ...] = ()  # variables received from other steps (--use)
    image: str | None = None  # the container image of a docker step (--image, Kale image:)
    labels: tuple[tuple[str, str], ...] = ()  # kept as metadata (--label, Kale label:)
    annotations: tuple[tuple[str, str], ...] = ()  # kept as metadata (--annotation)
    # resource requests with no equivalent here (Kale limit:RESOURCE:VALUE): shown, not applied
    other_limits: tuple[tuple[str, str], ...] = ()
    secrets: tuple[SecretUse, ...] = ()  # secrets set in the kernel's environment (--secret)
    # which upstream outcomes let it run (--run-if; model.conditions), and its --if
    run_if: str = ALL_SUCCEEDED
    condition: Condition | None = None

    @property
    def param_defaults(self) -> dict[str, Any]:
        return dict(self.params)


@dataclass(frozen=True)
class Step:
    """A step of a pipeline: its header, its code, and where it came from."""

    header: StepHeader
    code: str
    cell: int | None = None  # 1-based cell number in the source notebook, when known

    @property
    def name(self) -> str:
        return self.header.name

    def upstream_names(self) -> set[str]:
        """Names of the steps this one must wait for (data inputs, variables, ``--after``,
        the steps whose metrics its ``--if`` condition reads)."""
        names = {i.step for i in self.header.inputs if isinstance(i, StepOutputInput)}
        names |= set(self.header.condition.steps) if self.header.condition else set()
        return names | set(self.header.after) | {use.step for use in self.header.uses}


@dataclass(frozen=True)
class SetupCell:
    """A ``%%mlsetup`` cell: code every step runs before its own."""

    code: str
    cell: int | None = None
