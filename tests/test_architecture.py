"""The import graph keeps its shape: layer directions and no circles (docs/architecture.md).

The graph is computed from the code's own imports with `ast`, not from a hand-kept list: every
``import``/``from ... import`` in `dsl/` and `s3/` counts, whether it sits at module level, inside a
function (a deferred import is still a dependency) or under ``if TYPE_CHECKING:`` (a type is still
a dependency). Each edge records where it was found so a failure names the line to change.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dsl", "s3")


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    where: str
    """``path:line``"""
    kind: str
    """``module`` (top level), ``function`` (inside a def) or ``type-checking``."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` names (``s3.engine.Engine`` -> ``s3.engine``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, known: dict[str, Path]) -> list[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    rel = path.relative_to(ROOT)
    edges: list[Edge] = []

    def add(target: str | None, node: ast.stmt, kind: str) -> None:
        if target is not None and target != module:
            edges.append(Edge(module, target, f"{rel}:{node.lineno}", kind))

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            child_kind = kind
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                child_kind = "function" if kind == "module" else kind
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, "type-checking")
                for stmt in child.orelse:
                    visit_stmt(stmt, kind)
                continue
            visit_stmt(child, child_kind)

    def visit_stmt(node: ast.AST, kind: str) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_resolve(alias.name, known), node, kind)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            for alias in node.names:
                # `from s3 import shadow` names a module; `from s3.engine import Engine` a member.
                add(_resolve(f"{prefix}.{alias.name}", known), node, kind)
        else:
            visit(node, kind)

    visit(tree, "module")
    return edges


def _graph() -> list[Edge]:
    known = _modules()
    edges: list[Edge] = []
    for module, path in known.items():
        edges.extend(_imports(module, path, known))
    return list(
        dict.fromkeys(edges)
    )  # one edge per (line, target): `from a import x, y` counts once


EDGES = _graph()


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("dsl", ("s3",), "the language knows nothing of the service"),
    ("s3.core", ("s3.adapters", "s3.http", "s3.config"), "the pure core does no I/O"),
    (
        "s3.adapters",
        ("s3.engine", "s3.http", "s3.service", "s3.worker"),
        "adapters serve the kernel, never call it",
    ),
]


def test_the_graph_is_not_empty() -> None:
    """Guard the guard: the scan finds known edges of every kind."""
    pairs = {(e.src, e.dst) for e in EDGES}
    assert ("s3.engine", "s3.core.decide") in pairs
    assert ("dsl.compiler", "dsl.nodes") in pairs
    assert {e.kind for e in EDGES} >= {"module", "function"}
    assert len(_modules()) > 80


@pytest.mark.parametrize(("layer", "forbidden", "why"), RULES, ids=[r[0] for r in RULES])
def test_import_direction(layer: str, forbidden: tuple[str, ...], why: str) -> None:
    bad = [
        f"{e.src} -> {e.dst} ({e.kind} import at {e.where})"
        for e in EDGES
        if _under(e.src, layer) and any(_under(e.dst, f) for f in forbidden)
    ]
    assert not bad, f"{layer} must not import {', '.join(forbidden)} ({why}):\n" + "\n".join(bad)


def _cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    succ: dict[str, list[str]] = {}
    for e in edges:
        succ.setdefault(e.src, []).append(e.dst)
        succ.setdefault(e.dst, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(succ):
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(succ[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_planted_circle() -> None:
    planted = [
        Edge("a", "b", "", "module"),
        Edge("b", "c", "", "function"),
        Edge("c", "a", "", "module"),
    ]
    assert _cycles([*planted, Edge("c", "d", "", "module")]) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    """No circle of imports that run (module level or inside a function).

    An ``if TYPE_CHECKING:`` import never runs, so a type-only back-reference (a module naming a
    type of the module that calls it) does not close a circle; it still counts for the direction
    rules above.
    """
    runtime = [e for e in EDGES if e.kind != "type-checking"]
    circles = _cycles(runtime)
    lines = []
    for comp in circles:
        members = set(comp)
        lines.append(" <-> ".join(comp))
        lines.extend(
            f"    {e.src} -> {e.dst} ({e.kind} import at {e.where})"
            for e in runtime
            if e.src in members and e.dst in members
        )
    assert not circles, "import circles:\n" + "\n".join(lines)


# -- one builder for what is stored ---------------------------------------------------------------


def _calls_and_kinds() -> tuple[set[str], list[str]]:
    """Every event kind written (a literal first argument of `event_id`/`_event`/`on_event`, or a
    literal ``"kind":`` in a dict) and every place outside `store_docs` that spells ``EVT-``."""
    kinds: set[str] = set()
    hand_built: list[str] = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(ROOT)
        consts = {  # module-level NAME = "TEXT", so `kind=PUBLISHED` is seen as its text
            t.id: stmt.value.value
            for stmt in tree.body
            if isinstance(stmt, ast.Assign)
            and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str)
            for t in stmt.targets
            if isinstance(t, ast.Name)
        }

        def text(e: ast.expr | None, consts: dict[str, str] = consts) -> str | None:
            if isinstance(e, ast.Constant) and isinstance(e.value, str):
                return e.value
            return consts.get(e.id) if isinstance(e, ast.Name) else None

        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                first = text(node.args[0]) if node.args else None
                if name in ("event_id", "_event", "on_event") and first is not None:
                    kinds.add(first)
            elif isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    kind = text(v) if v is not None else None
                    if (
                        isinstance(k, ast.Constant)
                        and k.value == "kind"
                        and kind
                        and kind.isupper()
                    ):
                        kinds.add(kind)
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("EVT-")
                and module != "s3.adapters.store_docs"
            ):
                hand_built.append(f"{rel}:{node.lineno}")
    return kinds, hand_built


def test_every_event_kind_written_is_listed() -> None:
    from s3.ports import EVENT_KINDS

    kinds, _ = _calls_and_kinds()
    assert {
        "DECIDE",
        "ENTRY_RECONCILED",
        "SHADOW_DIFF",
        "CONFIG_REJECTED",
    } <= kinds  # the scan works
    assert kinds - set(EVENT_KINDS) == set(), "written but not in s3.ports.EVENT_KINDS"


def test_event_ids_are_built_in_one_place() -> None:
    _, hand_built = _calls_and_kinds()
    assert not hand_built, "build event ids with s3.adapters.store_docs.event_id: " + ", ".join(
        hand_built
    )


def test_every_module_over_500_lines_says_why_in_architecture_md() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    big = [
        str(path.relative_to(ROOT))
        for path in _modules().values()
        if len(path.read_text(encoding="utf-8").splitlines()) > 500
    ]
    assert big, "the scan finds the big modules"
    missing = [p for p in big if f"| `{p}` |" not in doc]
    assert not missing, "over 500 lines without a line in docs/architecture.md: " + ", ".join(
        missing
    )
