"""What a notebook cell's code reads and defines, without running it.

One place for the static analysis both Kale notebooks (``kale``: which pipeline parameters
a step uses, which step defines a metric) and variable flows (``dataflow``: which names a
step receives, which it hands on) rely on:

- IPython syntax (``%magic``, ``!shell``) is read through IPython's own transforms;
- the names a cell *uses* before defining them are pyflakes' "undefined name" reports on
  the cell alone (flow-sensitive: ``df = df.dropna()`` uses ``df``), as Kale does;
- the names it *defines* are ``symtable``'s module-level bindings (assignments, loops,
  ``with``, ``def``, ``class``, also inside ``if``/``try``), imports apart;
- the names it *changes in place* are those whose items or attributes it assigns or
  deletes (``df["z"] = 1``, ``df.loc[...] = ...``) or whose method it calls as a statement
  (``model.fit(X, y)``, ``items.append(3)``): a later step must see them as this one left
  them, as it would in the notebook;
- a function or class a setup cell defines reads the globals it names, transitively.
"""

from __future__ import annotations

import ast
import symtable
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=1024)
def python_source(code: str) -> str | None:
    """``code`` as plain Python: IPython's transforms turn ``%magic`` and ``!shell`` lines
    into calls (imported only when a cell needs it: it costs ~0.6 s). None when the code is
    not Python even then."""
    try:
        ast.parse(code)
        return code
    except SyntaxError:
        pass
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        transformed = str(TransformerManager().transform_cell(code))
        ast.parse(transformed)
        return transformed
    except (SyntaxError, ValueError):  # ValueError: a null byte in the source
        return None


def parse_cell(code: str) -> ast.Module | None:
    """The syntax tree of a cell as IPython would read it; None when it is not Python."""
    source = python_source(code)
    return ast.parse(source) if source is not None else None


def used_names(tree: ast.AST) -> set[str]:
    """Every name the code reads, anywhere (functions and comprehensions too)."""
    return {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


@dataclass(frozen=True)
class CodeNames:
    """What one piece of code reads before defining it, and what it defines."""

    uses: tuple[str, ...]  # in order of first use
    defines: frozenset[str]  # bound at module level, imports apart
    imports: frozenset[str]  # bound at module level by import statements
    functions: Mapping[str, frozenset[str]]  # module-level function/class -> globals it reads
    readable: bool = True  # False: not Python even after IPython's transforms
    changes: frozenset[str] = frozenset()  # names whose value it may change in place
    reads: frozenset[str] = frozenset()  # every name it reads, anywhere (used_names)

    @property
    def bindings(self) -> frozenset[str]:
        """Every name bound at module level, imports included."""
        return self.defines | self.imports


@lru_cache(maxsize=1024)
def code_names(code: str, known: frozenset[str] = frozenset()) -> CodeNames:
    """The names ``code`` uses and defines; ``known`` are names it has without defining
    (builtins are known anyway)."""
    source = python_source(code)
    if source is None:
        return CodeNames((), frozenset(), frozenset(), {}, readable=False)
    from pyflakes import checker, messages

    tree = ast.parse(source)  # one tree for pyflakes, the in-place changes and the reads
    flakes = checker.Checker(tree, filename="<cell>", builtins=set(known))
    uses = [m.message_args[0] for m in flakes.messages if isinstance(m, messages.UndefinedName)]
    table = symtable.symtable(source, "<cell>", "exec")
    defines: set[str] = set()
    imports: set[str] = set()
    for symbol in table.get_symbols():
        if symbol.is_imported():
            imports.add(symbol.get_name())
        elif symbol.is_assigned() or symbol.is_namespace():
            defines.add(symbol.get_name())
    functions = {child.get_name(): frozenset(_globals_read(child))
                 for child in table.get_children()
                 if child.get_type() in ("function", "class")}
    return CodeNames(tuple(dict.fromkeys(uses)), frozenset(defines), frozenset(imports),
                     functions, changes=frozenset(_changed_in_place(tree)),
                     reads=frozenset(used_names(tree)))


_COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try,
             ast.TryStar, ast.Match)


def _changed_in_place(tree: ast.Module) -> set[str]:
    """Module-level names whose items or attributes the code assigns or deletes, or whose
    method it calls as a statement (function and class bodies are not the module's)."""
    names: set[str] = set()
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        statement = todo.pop()
        if isinstance(statement, _COMPOUND):
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(statement, field, []):
                    todo.extend(child.body if isinstance(child, ast.ExceptHandler | ast.match_case)
                                else [child])
            continue
        targets: list[ast.expr] = []
        if isinstance(statement, ast.Assign):
            targets = list(statement.targets)
        elif isinstance(statement, ast.AugAssign | ast.AnnAssign):
            targets = [statement.target]
        elif isinstance(statement, ast.Delete):
            targets = list(statement.targets)
        elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call) and \
                isinstance(statement.value.func, ast.Attribute):
            targets = [statement.value.func]
        for target in targets:
            for item in (target.elts if isinstance(target, ast.Tuple | ast.List) else [target]):
                if isinstance(item, ast.Subscript | ast.Attribute):
                    root = _root_name(item)
                    if root is not None:
                        names.add(root)
    return names


def _root_name(node: ast.expr) -> str | None:
    """``df`` of ``df.loc[1, "a"]`` or ``model.steps[0].fit``; None for ``f().x``."""
    while isinstance(node, ast.Subscript | ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _globals_read(table: symtable.SymbolTable) -> set[str]:
    """The global names a function or class body (and what it nests) reads."""
    names = {s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global()}
    for child in table.get_children():
        names |= _globals_read(child)
    return names


def with_functions(names: Iterable[str], functions: Mapping[str, frozenset[str]]) -> set[str]:
    """``names`` and, through the functions among them, the globals those read,
    transitively (a setup function calling another reads what that one reads)."""
    found = set(names)
    todo = [name for name in found if name in functions]
    while todo:
        for other in functions[todo.pop()] - found:
            found.add(other)
            if other in functions:
                todo.append(other)
    return found
