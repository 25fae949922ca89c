"""Planning a run: each step's fingerprint, and whether it executes, is reused or skipped.

Everything is decided before the first step starts, so a no-op re-run costs only this.
Upstream results enter a step's fingerprint by result id: an ordinary execution commits
its result under the step fingerprint (so the id is known in advance), a forced one under
fingerprint + run id. A step whose upstream step is forced to execute therefore executes
too, and a later ordinary run reuses whatever was committed last.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import DefinitionError, DefinitionIssue, ExecutorError
from mlpipe_jupyter.executors.base import Unapplied
from mlpipe_jupyter.model.conditions import ALL_SUCCEEDED
from mlpipe_jupyter.model.fingerprint import FingerprintComponents, describe_changes, hash_text
from mlpipe_jupyter.model.parameters import step_parameters
from mlpipe_jupyter.model.pipeline import KALE, Pipeline
from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.model.step import DatasetInput, Step, StepHeader
from mlpipe_jupyter.model.values import canonical_literal
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.datasets import hash_file
from mlpipe_jupyter.store.runs import PlannedStep
from mlpipe_jupyter.validation import local_modules, selection_issues, step_hash_files

EXECUTE = "execute"
REUSE = "reuse"
SKIP = "skip"
# how a decision lists the requests the step's compute target did not apply
UNAPPLIED_MARK = "; not applied on "


def unapplied_note(decision: str | None) -> str | None:
    """The not-applied part of a recorded decision ("not applied on local: GPU request
    (1), image busybox"), or None."""
    if not decision or UNAPPLIED_MARK not in decision:
        return None
    # the note ends the decision's first line (a condition's result is a line of its own)
    return UNAPPLIED_MARK[2:] + decision.split(UNAPPLIED_MARK, 1)[1].split("\n", 1)[0]


def condition_parameters(pipeline: Pipeline, step: Step,
                         overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The run's values of the parameters the step's ``--if`` condition reads: the run's
    value, else the pipeline's default."""
    condition = step.header.condition
    if condition is None:
        return {}
    defaults = pipeline.parameters()
    return {name: overrides[name] if name in overrides else defaults[name]
            for name in condition.names if name in overrides or name in defaults}


@dataclass(frozen=True)
class Selection:
    """Which part of the pipeline a run covers."""

    steps: tuple[str, ...] = ()  # --step: run these (forced) ...
    downstream: bool = False  # ... and everything downstream of them
    until: str | None = None  # --until: this step and its upstream steps only
    regenerate: bool = False  # --regenerate: execute every selected step

    def check(self, pipeline: Pipeline) -> list[DefinitionIssue]:
        return selection_issues(pipeline, self.steps, self.until, self.downstream)


@dataclass
class StepPlan:
    step: Step
    action: str  # EXECUTE, REUSE or SKIP
    reason: str  # a sentence for `mlpipe why` and the progress display
    compute: str
    env: str | None = None
    image: str | None = None  # the step's own container image (--image)
    unapplied: list[Unapplied] = field(default_factory=list)  # requests the target ignores
    components: FingerprintComponents | None = None
    fingerprint: str | None = None
    result_id: str | None = None
    reused_from: str | None = None  # run that produced the reused result
    parameters: dict[str, Any] = field(default_factory=dict)
    input_paths: dict[str, Path] = field(default_factory=dict)
    input_sources: dict[str, str] = field(default_factory=dict)
    # the run's values of the parameters its --if condition reads
    condition_parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def decision(self) -> str:
        """The reason, and what of the step's requests its compute target does not apply."""
        if not self.unapplied:
            return self.reason
        return (f"{self.reason}{UNAPPLIED_MARK}{self.compute}: "
                + ", ".join(u.what for u in self.unapplied))

    def record(self, position: int, status: StepStatus, upstream: list[str]) -> PlannedStep:
        """What the run store keeps of this plan when the run starts."""
        return PlannedStep(
            step=self.step.name, position=position, status=status, cell=self.step.cell,
            upstream=upstream, fingerprint=self.fingerprint, result_id=self.result_id,
            reused_from=self.reused_from, decision=self.decision,
            components=self.components.to_dict() if self.components else None,
            compute=self.compute,
        )


def referenced_files(code: str, folder: Path) -> list[Path]:
    """Files under ``folder`` that ``code`` names in a string literal (``pd.read_csv(
    "data/iris.csv")``). A Kale notebook has no ``--input`` or ``--hash-paths``: its steps
    read data by path, and reuse must see when that data changes. Folders are not followed
    (a folder of images would be hashed on every run)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []  # cell magics and shell escapes: nothing we can see
    root = folder.resolve()
    found: set[Path] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        text = node.value
        if not text or len(text) > 255 or "\n" in text or "\0" in text:
            continue
        try:
            path = (folder / text).resolve()
            if path.is_relative_to(root) and path.is_file():
                found.add(path)
        except (OSError, ValueError):
            continue
    return sorted(found)


class Planner:
    """Decides, for one run, what each step does."""

    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        notebook: Path,
        run_id: str,
        parameters: Mapping[str, Any],
        environment_of: Callable[[str, str | None, str | None], str],
        default_compute: str,
        default_env: str | None = None,
        dataset_versions: Mapping[str, int] | None = None,
        remote_result: Callable[[Step, str, str], bool] | None = None,
        unapplied_of: Callable[[str, StepHeader], list[Unapplied]] | None = None,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.notebook = notebook
        self.folder = notebook.parent
        self.run_id = run_id
        self.parameters = parameters
        self.environment_of = environment_of
        self.default_compute = default_compute
        self.default_env = default_env
        self.dataset_versions = dict(dataset_versions or {})
        # (step, compute, fingerprint) -> whether the compute target's datastore had the
        # committed result and it is now committed locally (results from other machines)
        self.remote_result = remote_result
        # (compute, header) -> the step's requests that compute target does not apply
        self.unapplied_of = unapplied_of

    def plan(self, selection: Selection) -> dict[str, StepPlan]:
        scope = self._scope(selection)
        forced = set(selection.steps)
        needed = self.pipeline.ancestors(scope) - scope
        setup_hash = hash_text("\n\0".join(s.code for s in self.pipeline.setup))
        setup_files = [p for s in self.pipeline.setup for p in local_modules(s.code, self.folder)]
        plans: dict[str, StepPlan] = {}
        for name in self.pipeline.topological_order():
            step = self.pipeline.step(name)
            compute = step.header.compute or self.default_compute
            if name not in scope and name not in needed:
                plans[name] = StepPlan(step, SKIP, "not selected for this run", compute)
                continue
            plan = self._fingerprint(step, compute, setup_hash, setup_files, plans)
            is_forced = (
                name in forced or (selection.regenerate and name in scope)
                or not step.header.allow_reuse
            )
            previous = self.store.results.find(plan.fingerprint) if not is_forced else None  # type: ignore[arg-type]
            if is_forced:
                plan.action = EXECUTE
                plan.result_id = f"{plan.fingerprint}-{self.run_id}"
                plan.reason = (
                    "selected with --step" if name in forced
                    else "--regenerate" if selection.regenerate and name in scope
                    else "the step has --no-reuse"
                )
            elif previous is None and self.remote_result is not None and \
                    self.remote_result(step, compute, plan.fingerprint or ""):
                plan.action = REUSE
                plan.result_id = plan.fingerprint
                plan.reason = ("reused the result committed in the compute target's datastore "
                               "(computed elsewhere): code, parameters, inputs and environment "
                               "are the same")
            elif previous is not None:
                plan.action = REUSE
                plan.result_id = previous
                producer = self.store.runs.producer_of(previous)
                plan.reused_from = producer.run_id if producer else None
                plan.reason = (
                    f"reused the result of run {plan.reused_from or '?'}: code, parameters, "
                    "inputs and environment are unchanged"
                )
            else:
                plan.action = EXECUTE
                plan.result_id = plan.fingerprint
                plan.reason = self._why_execute(step, plan.components)  # type: ignore[arg-type]
                if name in needed:
                    plan.reason += " (needed by the selected steps)"
            if plan.action == EXECUTE and self.unapplied_of is not None:
                plan.unapplied = self.unapplied_of(compute, step.header)
            plans[name] = plan
        return plans

    def _scope(self, selection: Selection) -> set[str]:
        if selection.until:
            return {selection.until} | self.pipeline.ancestors([selection.until])
        if selection.steps:
            scope = set(selection.steps)
            if selection.downstream:
                scope |= self.pipeline.descendants(selection.steps)
            return scope
        return set(self.pipeline.step_names)

    def _fingerprint(
        self,
        step: Step,
        compute: str,
        setup_hash: str,
        setup_files: list[Path],
        plans: Mapping[str, StepPlan],
    ) -> StepPlan:
        files: dict[str, str] = {}
        # checked with the rest of the request (validation.validate_run) before planning;
        # a file deleted since then is still an error, never a silently smaller fingerprint
        matched, issues = step_hash_files(step, self.folder)
        if issues:
            raise DefinitionError(issues, self.pipeline.source)
        for path in matched:
            files[path.relative_to(self.folder).as_posix()] = hash_file(path)
        for path in setup_files + local_modules(step.code, self.folder):
            files.setdefault(path.relative_to(self.folder).as_posix(), hash_file(path))
        if self.pipeline.kind == KALE:
            codes = [step.code, *(cell.code for cell in self.pipeline.setup)]
            for path in sorted({p for code in codes for p in referenced_files(code, self.folder)}):
                files.setdefault(path.relative_to(self.folder.resolve()).as_posix(),
                                 hash_file(path))
        inputs: dict[str, str] = {}
        input_paths: dict[str, Path] = {}
        for ref in step.header.inputs:
            if isinstance(ref, DatasetInput):
                pinned = ref.version if ref.version is not None else self.dataset_versions.get(ref.dataset)
                version = self.store.datasets.get(ref.dataset, pinned)
                inputs[ref.name] = version.identity
                input_paths[ref.name] = version.path
            else:
                upstream = plans[ref.step]
                inputs[ref.name] = f"step:{ref.step}.{ref.output}#{upstream.result_id}"
                input_paths[ref.name] = self.store.results.path(upstream.result_id or "", ref.output)
        for other in step.header.after:  # ordering only, but a re-executed upstream counts
            inputs[f"after:{other}"] = f"step:{other}#{plans[other].result_id}"
        condition = step.header.condition
        for other in condition.steps if condition else ():  # their metrics decide
            inputs[f"if:{other}"] = f"step:{other}#{plans[other].result_id}"
        params = step_parameters(self.pipeline, step.name, self.parameters)
        # a step's own image replaces the run's default environment
        image = step.header.image
        env = step.header.env or (None if image else self.default_env)
        try:
            environment = self.environment_of(compute, env, image)
        except ExecutorError as exc:  # a missing image or a failed build: name the step
            where = f" (cell {step.cell})" if step.cell is not None else ""
            raise type(exc)(f"step {step.name!r}{where}: {exc}") from None
        settings: dict[str, Any] = {
            "outputs": sorted(o.name for o in step.header.outputs), "env": env,
            "kernel": "python3",
        }
        # only when there are any: fingerprints of steps without variables stay as they were
        exports = self.pipeline.exports_of(step.name)
        if exports:
            settings["variables"] = exports
        received = [f"{flow.producer}.{flow.name}" for flow in self.pipeline.flows_into(step.name)]
        if received:
            settings["receives"] = received
        # a secret's name and variable, never its value: rotating a password re-runs nothing
        # (only when there are any: other steps' fingerprints stay as they were)
        if step.header.secrets:
            settings["secrets"] = sorted(use.describe() for use in step.header.secrets)
        # conditional steps (only when set: other steps' fingerprints stay as they were); the
        # values of the parameters a condition reads decide it as much as the metrics do
        if step.header.run_if != ALL_SUCCEEDED:
            settings["run_if"] = step.header.run_if
        read = condition_parameters(self.pipeline, step, self.parameters)
        if condition is not None:
            settings["condition"] = condition.text
            if read:
                settings["condition_parameters"] = {name: canonical_literal(value)
                                                    for name, value in read.items()}
        components = FingerprintComponents(
            code=hash_text(step.code),
            setup=setup_hash,
            files=files,
            params={name: canonical_literal(value) for name, value in params.items()},
            inputs=inputs,
            environment=environment,
            settings=settings,
        )
        return StepPlan(
            step=step, action=EXECUTE, reason="", compute=compute, env=env, image=image,
            components=components,
            fingerprint=components.fingerprint(), parameters=params, input_paths=input_paths,
            input_sources={k: v.split("#")[0] for k, v in inputs.items()
                           if not k.startswith(("after:", "if:"))},
            condition_parameters=read,
        )

    def _why_execute(self, step: Step, components: FingerprintComponents) -> str:
        previous = self.store.runs.previous_step_run(str(self.notebook), step.name, float("inf"))
        if previous is None or previous.components is None:
            return "no previous result: first run of this step"
        changes = describe_changes(FingerprintComponents.from_dict(previous.components), components)
        if not changes:
            return f"the result of run {previous.run_id} is no longer in the workspace"
        return "changed since run " + previous.run_id + ": " + "; ".join(changes)
