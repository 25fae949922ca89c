"""A pipeline: steps, setup cells, and the DAG their data dependencies imply (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlpipe_jupyter.errors import DefinitionError, DefinitionIssue, NotFoundError
from mlpipe_jupyter.model.conditions import LoggedMetrics, logged_metrics, suggest
from mlpipe_jupyter.model.step import (
    VARIABLES_OUTPUT,
    DatasetInput,
    SetupCell,
    Step,
    StepOutputInput,
)

MLSTEP = "mlstep"  # a notebook of %%mlstep cells
KALE = "kale"  # a notebook of Kale-tagged cells (kale.py)


@dataclass(frozen=True)
class VariableFlow:
    """Variable ``name`` saved by step ``producer`` and loaded by step ``consumer``."""

    producer: str
    consumer: str
    name: str


def layers_of(upstream: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each step's layer: its depth, the longest path from a root step (roots are 0).

    ``upstream`` maps every step to its direct upstream steps; names it does not map are
    ignored, and so is an edge that closes a cycle. ``Pipeline.layers`` groups steps by
    this; the run read model (``runner.view``) draws a recorded run's DAG with it.
    """
    depth: dict[str, int] = {}
    for root in upstream:
        if root in depth:
            continue
        # depth-first without recursion (a long chain of steps is no stack overflow)
        path = {root}
        stack = [(root, iter(upstream[root]))]
        while stack:
            name, parents = stack[-1]
            for parent in parents:
                if parent in upstream and parent not in path and parent not in depth:
                    path.add(parent)
                    stack.append((parent, iter(upstream[parent])))
                    break
            else:
                stack.pop()
                path.discard(name)
                depth[name] = 1 + max((depth[u] for u in upstream[name] if u in depth),
                                      default=-1)
    return depth


@dataclass(frozen=True)
class Pipeline:
    """Steps in notebook order plus the setup cells every step runs first."""

    steps: tuple[Step, ...]
    setup: tuple[SetupCell, ...] = ()
    source: str | None = None  # where it came from, for messages (a notebook path)
    parse_issues: tuple[DefinitionIssue, ...] = ()  # header mistakes found while reading
    # pipeline parameters declared apart from the steps (Kale's pipeline-parameters cell)
    declared_parameters: tuple[tuple[str, Any], ...] = ()
    experiment: str | None = None  # the default experiment of its runs (Kale metadata)
    kind: str = MLSTEP
    flows: tuple[VariableFlow, ...] = ()  # the variables handed along edges (model.dataflow)
    _by_name: dict[str, Step] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for step in self.steps:
            self._by_name.setdefault(step.name, step)

    # -- lookup -------------------------------------------------------------------------
    def step(self, name: str) -> Step:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(s.name for s in self.steps) or "none"
            raise NotFoundError(f"no step named {name!r} (steps: {known})") from None

    def has_step(self, name: str) -> bool:
        return name in self._by_name

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def parameters(self) -> dict[str, Any]:
        """Pipeline parameters: every step parameter name with its first default."""
        found: dict[str, Any] = dict(self.declared_parameters)
        for step in self.steps:
            for name, default in step.header.params:
                found.setdefault(name, default)
        return found

    def flows_into(self, name: str) -> list[VariableFlow]:
        """The variables step ``name`` receives, in the order they were found."""
        return [flow for flow in self.flows if flow.consumer == name]

    def exports_of(self, name: str) -> list[str]:
        """The variables step ``name`` saves for later steps, sorted, each once."""
        return sorted({flow.name for flow in self.flows if flow.producer == name})

    def datasets_used(self) -> set[str]:
        return {
            i.dataset for s in self.steps for i in s.header.inputs if isinstance(i, DatasetInput)
        }

    # -- graph --------------------------------------------------------------------------
    def upstream(self, name: str) -> set[str]:
        """Direct upstream steps of ``name``."""
        return self.step(name).upstream_names()

    def downstream(self, name: str) -> set[str]:
        """Direct downstream steps of ``name``."""
        return {s.name for s in self.steps if name in s.upstream_names()}

    def ancestors(self, names: Iterable[str]) -> set[str]:
        return self._closure(names, self.upstream)

    def descendants(self, names: Iterable[str]) -> set[str]:
        return self._closure(names, self.downstream)

    @staticmethod
    def _closure(names: Iterable[str], neighbours: Any) -> set[str]:
        seen: set[str] = set()
        todo = list(names)
        while todo:
            for other in neighbours(todo.pop()):
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return seen

    def topological_order(self) -> list[str]:
        """Step names with every step after its upstream steps; ties keep notebook order."""
        order: list[str] = []
        placed: set[str] = set()
        remaining = list(self.step_names)
        while remaining:
            ready = [n for n in remaining if self.upstream(n) <= placed]
            if not ready:
                raise DefinitionError(
                    [DefinitionIssue(f"steps form a cycle: {' -> '.join(self._a_cycle())}")],
                    self.source,
                )
            for name in ready:
                order.append(name)
                placed.add(name)
            remaining = [n for n in remaining if n not in placed]
        return order

    def layers(self) -> list[list[str]]:
        """Steps grouped by depth (longest path from a root): the DAG's drawing order."""
        order = self.topological_order()  # a cycle is a DefinitionError here
        depth = layers_of({name: sorted(self.upstream(name)) for name in order})
        result: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
        for name in self.step_names:
            result[depth[name]].append(name)
        return result

    def _a_cycle(self) -> list[str]:
        """One cycle among the steps, for the error message (first repeated at the end)."""
        colour: dict[str, int] = {}
        stack: list[str] = []

        def visit(name: str) -> list[str] | None:
            colour[name] = 1
            stack.append(name)
            for other in sorted((self.upstream(name) - {name}) & set(self._by_name)):
                if colour.get(other) == 1:
                    cycle = stack[stack.index(other) :] + [other]
                    return list(reversed(cycle))
                if other not in colour:
                    found = visit(other)
                    if found:
                        return found
            stack.pop()
            colour[name] = 2
            return None

        for name in self.step_names:
            if name not in colour:
                found = visit(name)
                if found:
                    return found
        return []

    # -- validation ---------------------------------------------------------------------
    def definition_issues(
        self, datasets: Mapping[str, Iterable[int]] | None = None,
        extra_code: Mapping[str, Sequence[str]] | None = None,
    ) -> list[DefinitionIssue]:
        """Every problem in the definition; ``datasets`` maps known dataset names to versions.

        With ``datasets=None`` dataset inputs are not checked (no workspace at hand).
        ``extra_code`` maps a step to more code it runs (the local modules it imports): the
        metrics logged there count as the step's for the ``--if`` checks.
        """
        issues: list[DefinitionIssue] = list(self.parse_issues)
        first_cell: dict[str, int | None] = {}
        registered: dict[str, str] = {}
        for step in self.steps:
            if step.name in first_cell:
                where = first_cell[step.name]
                issues.append(
                    DefinitionIssue(
                        f"duplicate step name (first defined in cell {where})",
                        step=step.name,
                        cell=step.cell,
                    )
                )
            else:
                first_cell[step.name] = step.cell
            for out in step.header.outputs:
                if out.register_as is None:
                    continue
                owner = registered.setdefault(out.register_as, f"{step.name}.{out.name}")
                if owner != f"{step.name}.{out.name}":
                    issues.append(
                        DefinitionIssue(
                            f"dataset {out.register_as!r} is already registered by {owner}",
                            step=step.name,
                            cell=step.cell,
                            field=f"--output {out.describe()}",
                        )
                    )
        for step in self.steps:
            issues.extend(self._input_issues(step, datasets))
            issues.extend(self._condition_issues(step, extra_code or {}))
        cycle = self._a_cycle()
        if cycle:
            issues.append(
                DefinitionIssue(
                    f"steps form a cycle: {' -> '.join(cycle)}",
                    step=cycle[0],
                    cell=self._by_name[cycle[0]].cell,
                )
            )
        return issues

    def _input_issues(
        self, step: Step, datasets: Mapping[str, Iterable[int]] | None
    ) -> list[DefinitionIssue]:
        issues: list[DefinitionIssue] = []

        def add(message: str, option: str) -> None:
            issues.append(DefinitionIssue(message, step=step.name, cell=step.cell, field=option))

        for ref in step.header.inputs:
            option = f"--input {ref.describe()}"
            if isinstance(ref, StepOutputInput):
                if ref.step == step.name:
                    add("a step cannot read its own output", option)
                elif not self.has_step(ref.step):
                    add(f"step {ref.step!r} is not defined in this notebook", option)
                elif ref.output not in {o.name for o in self.step(ref.step).header.outputs}:
                    outs = ", ".join(o.name for o in self.step(ref.step).header.outputs
                                     if o.name != VARIABLES_OUTPUT)  # not the user's folder
                    add(
                        f"step {ref.step!r} has no output {ref.output!r} "
                        f"(its outputs: {outs or 'none'})",
                        option,
                    )
            elif datasets is not None:
                if ref.dataset not in datasets:
                    known = ", ".join(sorted(datasets)) or "none registered"
                    add(
                        f"dataset {ref.dataset!r} is not registered (known: {known}); "
                        f"register it with: mlpipe dataset register {ref.dataset} PATH",
                        option,
                    )
                elif ref.version is not None and ref.version not in set(datasets[ref.dataset]):
                    versions = ", ".join(f"v{v}" for v in sorted(datasets[ref.dataset]))
                    add(f"dataset {ref.dataset!r} has no version {ref.version} ({versions})", option)
        for use in step.header.uses:
            option = f"--use {use.describe()}"
            if use.step == step.name:
                add("a step cannot receive its own variable", option)
            elif not self.has_step(use.step):
                add(f"step {use.step!r} is not defined in this notebook", option)
        for other in step.header.after:
            if other == step.name:
                add("a step cannot run after itself", f"--after {other}")
            elif not self.has_step(other):
                add(f"step {other!r} is not defined in this notebook", f"--after {other}")
        return issues

    def logged_metrics(self, name: str, extra_code: Sequence[str] = ()) -> LoggedMetrics:
        """The metrics step ``name`` logs, as far as its code (with the setup cells and
        ``extra_code``) shows them."""
        found = LoggedMetrics()
        for code in (self.step(name).code, *(s.code for s in self.setup), *extra_code):
            found = found | logged_metrics(code)
        return found

    def _condition_issues(
        self, step: Step, extra_code: Mapping[str, Sequence[str]]
    ) -> list[DefinitionIssue]:
        """The ``--if`` condition names parameters, and metrics of other steps that log them."""
        condition = step.header.condition
        if condition is None:
            return []
        issues: list[DefinitionIssue] = []
        option = f"--if {condition.text}"

        def add(message: str) -> None:
            issues.append(DefinitionIssue(message, step=step.name, cell=step.cell, field=option))

        parameters = self.parameters()
        for name in condition.names:
            if name in parameters:
                continue
            if self.has_step(name):
                add(f"{name!r} is a step: a condition reads its metrics, {name}.METRIC")
                continue
            add(f"{name!r} is neither a parameter nor a step"
                f"{suggest(name, [*parameters, *self.step_names])} "
                f"(parameters: {', '.join(parameters) or 'none'})")
        for other, metric in condition.metrics:
            if other == step.name:
                add(f"a step's condition cannot read its own metrics ({other}.{metric}): "
                    "it is evaluated before the step runs")
                continue
            if not self.has_step(other):
                hint = suggest(other, self.step_names)
                if other in parameters:
                    add(f"{other!r} is a parameter; STEP.METRIC reads a step's metric")
                else:
                    add(f"step {other!r} is not defined in this notebook{hint} "
                        f"(steps: {', '.join(self.step_names)})")
                continue
            if other in parameters and other in condition.names:
                add(f"{other!r} is both a step and a parameter: rename one of them")
            logged = self.logged_metrics(other, extra_code.get(other, ()))
            if metric not in logged.names and not logged.dynamic:
                add(f"step {other!r} never logs metric {metric!r}"
                    f"{suggest(metric, logged.names)} (it logs: "
                    f"{', '.join(sorted(logged.names)) or 'none'}; log it with "
                    f"context.log({metric!r}, value))")
        return issues

    def validate(self, datasets: Mapping[str, Iterable[int]] | None = None,
                 extra_code: Mapping[str, Sequence[str]] | None = None) -> None:
        """Raise ``DefinitionError`` with every issue, if there is any."""
        issues = self.definition_issues(datasets, extra_code)
        if issues:
            raise DefinitionError(issues, self.source)
