"""Which variables flow along which edge of a pipeline (static analysis, no kernel).

A step *uses* the names it reads before defining them: pyflakes' "undefined name" reports
on the step's code alone, with the names every step has anyway (builtins, IPython's, the
step context, its parameters, what the setup cells define) declared as builtins. This is
how Kale finds them, and it is flow-sensitive where it matters: ``df = df.dropna()`` uses
``df``. A step *defines* the names bound at its module level (``symtable``: assignments,
loops, ``with``, ``def``, ``class``; imports are not handed over, they are re-run), and
*changes* those whose items or attributes it sets or whose methods it calls as statements
(``df["z"] = 1``, ``model.fit(X, y)``). Both *provide* the name to later steps: as in the
notebook, a later step sees the value as the last step that set or changed it left it.
(``cell_code`` does the reading.)

Kale notebooks receive every used name from the nearest upstream step that provides it.
``%%mlstep`` notebooks declare what they receive (``--use STEP.NAME``): explicit in the
header, shown by ``mlpipe check`` and the widget, and nothing changes for notebooks that
declare nothing. A used name that another step defines but the step does not receive is a
definition error that says how to fix it, as is a name two parallel parents both define.

The flows are then made ordinary data: each producer gets an output folder
(``VARIABLES_OUTPUT``) its step notebook saves the variables into, and each consumer an
input bound to that folder, so reuse, fingerprints, commits, containers, Dask workers and
object-store datastores handle variables exactly as they handle folders.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import replace

from mlpipe_jupyter.cell_code import CodeNames, code_names, with_functions
from mlpipe_jupyter.errors import DefinitionIssue
from mlpipe_jupyter.model.pipeline import KALE, Pipeline, VariableFlow
from mlpipe_jupyter.model.step import (
    VARIABLES_INPUT_PREFIX,
    VARIABLES_OUTPUT,
    OutputSpec,
    Step,
    StepOutputInput,
)

# Names a step's kernel has without any step defining them: IPython's user namespace and
# the injected step context (render.py).
KERNEL_NAMES = frozenset({
    "get_ipython", "display", "In", "Out", "exit", "quit", "_", "__", "___", "_i", "_ii",
    "_iii", "_oh", "_dh", "_ih", "__builtins__", "__name__", "__doc__", "__file__",
    "inputs", "outputs", "context",
})


def _builtin_names() -> frozenset[str]:
    return frozenset(dir(builtins))


class _Resolver:
    """One pass over a pipeline: every step's names, then its flows and their issues."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.issues: list[DefinitionIssue] = []
        setup = [code_names(cell.code, KERNEL_NAMES) for cell in pipeline.setup]
        self.setup_names = frozenset().union(*(s.bindings for s in setup))
        # a function of the setup cells reads the globals it names when a step calls it
        self.setup_functions: dict[str, frozenset[str]] = {}
        for names in setup:
            self.setup_functions.update(names.functions)
        self.names = {step.name: self._names_of(step) for step in pipeline.steps}
        self._ancestors: dict[str, set[str]] = {}

    def ancestors(self, name: str) -> set[str]:
        """The steps ``name`` runs after, directly or not. Unlike ``Pipeline.ancestors`` it
        tolerates what ``Pipeline.definition_issues`` reports (unknown steps, cycles)."""
        if name not in self._ancestors:
            seen: set[str] = set()
            todo = [name]
            while todo:
                for other in self.pipeline.step(todo.pop()).upstream_names():
                    if other not in seen and self.pipeline.has_step(other):
                        seen.add(other)
                        todo.append(other)
            self._ancestors[name] = seen
        return self._ancestors[name]

    def _names_of(self, step: Step) -> CodeNames:
        known = self.setup_names | {name for name, _ in step.header.params} | KERNEL_NAMES
        names = code_names(step.code, frozenset(known))
        # the setup functions the step mentions read globals the step must then have
        mentioned = (self.setup_functions.keys() & names.reads) - names.defines
        read = with_functions(mentioned, self.setup_functions) - mentioned
        extra = sorted(read - known - _builtin_names() - names.defines)
        if extra:
            names = replace(names, uses=tuple(dict.fromkeys(names.uses + tuple(extra))))
        return names

    def issue(self, step: Step, message: str, field: str | None = None) -> None:
        self.issues.append(DefinitionIssue(message, step=step.name, cell=step.cell, field=field))

    def definers(self, name: str, besides: str) -> list[str]:
        """The steps other than ``besides`` that provide ``name``: define or change it."""
        return [s.name for s in self.pipeline.steps if s.name != besides
                and name in self.names[s.name].defines | self.names[s.name].changes]

    def importers(self, name: str, besides: str) -> list[str]:
        return [s.name for s in self.pipeline.steps
                if s.name != besides and name in self.names[s.name].imports]

    # -- Kale: every used name from the nearest upstream step that defines it -------------
    def kale_flows(self, step: Step) -> list[VariableFlow]:
        flows: list[VariableFlow] = []
        ancestors = self.ancestors(step.name)
        for name in self.names[step.name].uses:
            definers = self.definers(name, step.name)
            upstream = [d for d in definers if d in ancestors]
            if not upstream:
                if definers:
                    self.issue(step, f"uses {name!r}, which step {_names(definers)} "
                               "defines, but this step does not run after it: add the tag "
                               f"{_names([f'prev:{d}' for d in definers], 'or')} to this "
                               "step's cell", f"variable {name}")
                else:
                    self._imported_elsewhere(step, name, "the imports cell")
                continue
            nearest = [d for d in upstream
                       if not any(d in self.ancestors(o) for o in upstream if o != d)]
            if len(nearest) > 1:
                self.issue(step, f"{name!r} is ambiguous: steps {_names(nearest)} both set or "
                           "change it and neither runs after the other. Rename it in one of "
                           "them, or make one run after the other (prev: tag)",
                           f"variable {name}")
                continue
            flows.append(VariableFlow(nearest[0], step.name, name))
        return flows

    # -- %%mlstep: what the header declares, and a fix for what it doesn't ----------------
    def declared_flows(self, step: Step) -> list[VariableFlow]:
        flows: list[VariableFlow] = []
        declared = {use.name for use in step.header.uses}
        for use in step.header.uses:
            if use.step == step.name or not self.pipeline.has_step(use.step):
                continue  # Pipeline.definition_issues says so
            producer = self.names[use.step]
            if use.name in producer.defines | producer.changes:
                flows.append(VariableFlow(use.step, step.name, use.name))
            elif use.name in producer.imports:
                self.issue(step, f"step {use.step!r} imports {use.name!r}: modules are not "
                           "handed over; import it in this step, or in a %%mlsetup cell",
                           f"--use {use.describe()}")
            else:
                defined = ", ".join(sorted(producer.defines | producer.changes)) or "nothing"
                self.issue(step, f"step {use.step!r} neither sets nor changes {use.name!r} at "
                           f"its top level (it sets or changes: {defined})",
                           f"--use {use.describe()}")
        for name in self.names[step.name].uses:
            if name in declared:
                continue
            definers = self.definers(name, step.name)
            if definers:
                fixes = _names([f"--use {d}.{name}" for d in definers], "or")
                self.issue(step, f"uses {name!r}, which step {_names(definers)} defines: to "
                           f"receive it, add {fixes} to this step's %%mlstep line",
                           f"variable {name}")
            else:
                self._imported_elsewhere(step, name, "a %%mlsetup cell")
        return flows

    def _imported_elsewhere(self, step: Step, name: str, shared_place: str) -> None:
        importers = self.importers(name, step.name)
        if importers:
            self.issue(step, f"uses {name!r}, which step {_names(importers)} imports: modules "
                       f"are not handed over between steps; import it in this step or in "
                       f"{shared_place}", f"variable {name}")

    def unreadable(self) -> None:
        for step in self.pipeline.steps:
            if not self.names[step.name].readable and step.header.uses:
                self.issue(step, "the step's code is not Python, so the variables it uses "
                           "cannot be found")


def _names(names: Iterable[str], joiner: str = "and") -> str:
    quoted = [f"'{n}'" if not n.startswith("--") and ":" not in n else f"`{n}`"
              for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {joiner} {quoted[-1]}"


def resolve_flows(pipeline: Pipeline) -> Pipeline:
    """``pipeline`` with its variable flows found, checked and made inputs and outputs.

    Problems join ``parse_issues``, so that ``Pipeline.validate`` reports them with the
    rest, all at once. A pipeline without flows comes back unchanged.
    """
    if not pipeline.steps:
        return pipeline
    resolver = _Resolver(pipeline)
    flows: list[VariableFlow] = []
    for step in pipeline.steps:
        if pipeline.kind == KALE:
            flows += resolver.kale_flows(step)
        else:
            flows += resolver.declared_flows(step)
    resolver.unreadable()
    if not flows and not resolver.issues:
        return pipeline
    return replace(
        pipeline,
        steps=tuple(_with_variable_folders(step, flows) for step in pipeline.steps),
        flows=tuple(flows),
        parse_issues=pipeline.parse_issues + tuple(resolver.issues),
        _by_name={},
    )


def _with_variable_folders(step: Step, flows: list[VariableFlow]) -> Step:
    """The step with an output folder for the variables it saves and one input per step it
    loads variables from."""
    exports = any(flow.producer == step.name for flow in flows)
    producers = list(dict.fromkeys(f.producer for f in flows if f.consumer == step.name))
    if not exports and not producers:
        return step
    header = step.header
    outputs = header.outputs + ((OutputSpec(VARIABLES_OUTPUT),) if exports else ())
    inputs = header.inputs + tuple(
        StepOutputInput(f"{VARIABLES_INPUT_PREFIX}{producer}", producer, VARIABLES_OUTPUT)
        for producer in producers
    )
    return replace(step, header=replace(header, outputs=outputs, inputs=inputs))
