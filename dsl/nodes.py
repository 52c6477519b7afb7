"""The syntax tree: a closed set of frozen, slotted dataclasses named after the words of the language.

Spans never take part in equality, so two parses of differently formatted text compare equal.
The parser builds `Name`; the checker replaces names by `FeatureRef`, `LetRef` or a literal (params).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from dsl.source import Span

NO_SPAN = Span("<none>", 0, 0, 0, 0)


def _span() -> Span:
    return field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Number:
    value: float | int
    text: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class String:
    value: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Name:
    """An unresolved identifier: a feature, a let or a param, decided by the checker."""

    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class FeatureRef:
    name: str
    optional: bool = False
    span: Span = _span()
    lag: int = 0
    """How many snapshots back (0: the current value; 1: ``prev(name)``, read as ``name_prev``)."""


@dataclass(frozen=True, slots=True)
class LetRef:
    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str  # one of + - * /
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Compare:
    """A comparison chain: ``a < b <= c`` means ``a < b and b <= c`` with ``b`` evaluated once."""

    operands: tuple[Expr, ...]
    ops: tuple[str, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Member:
    value: Expr
    container: Expr  # ListLit, or a Name of a list param
    negated: bool = False
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple[Expr, ...]
    span: Span = _span()
    func_span: Span = _span()


@dataclass(frozen=True, slots=True)
class Convert:
    """A checked unit conversion, ``to_bps(x)``: ``x * mul / div`` with one of the two 1.0."""

    func: str
    operand: Expr
    mul: float = 1.0
    div: float = 1.0
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Index:
    """``name[key]`` as written: a param table looked up by an enum value (checker: `Lookup`)."""

    name: str
    key: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Lookup:
    """A checked param-table lookup: the entry of ``keys`` equal to ``key`` (complete over the
    key's enum values, checked at build time)."""

    name: str
    key: Expr
    keys: tuple[str, ...]
    values: tuple[int | float, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Crossed:
    """A checked ``crossed_above(a, b)`` (op "above") or ``crossed_below``: the two values now and
    the same expressions one snapshot back (every feature read at lag + 1)."""

    op: str  # above | below
    left: Expr
    right: Expr
    left_prev: Expr
    right_prev: Expr
    span: Span = _span()


Expr: TypeAlias = (
    Number
    | String
    | Bool
    | ListLit
    | Name
    | FeatureRef
    | LetRef
    | Neg
    | Not
    | BinOp
    | BoolOp
    | Compare
    | Member
    | Call
    | Convert
    | Crossed
    | Index
    | Lookup
)


@dataclass(frozen=True, slots=True)
class Scale:
    """``size_mult *= E``: multiply an output by a positive factor when the rule fires."""

    target: str
    factor: Expr
    span: Span = _span()
    target_span: Span = _span()


@dataclass(frozen=True, slots=True)
class Flag:
    """A bare action word; ``skip_entry`` is the only one the checker accepts."""

    name: str
    span: Span = _span()


Action: TypeAlias = Scale | Flag


@dataclass(frozen=True, slots=True)
class LetDef:
    name: str
    expr: Expr
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    title: str | None
    priority: int
    when: Expr
    actions: tuple[Action, ...]
    span: Span = _span()
    id_span: Span = _span()


Item: TypeAlias = LetDef | Rule


@dataclass(frozen=True, slots=True)
class Module:
    """One parsed rule file."""

    path: str
    items: tuple[Item, ...]
    comments: tuple[tuple[int, str], ...] = field(default=(), compare=False, repr=False)


def children(node: object) -> tuple[object, ...]:
    """The direct sub-nodes of a node, for iterative walks (depth limits, searches)."""
    match node:
        case Neg(operand=o) | Not(operand=o) | Convert(operand=o):
            return (o,)
        case Index(key=k) | Lookup(key=k):
            return (k,)
        case BinOp(left=a, right=b):
            return (a, b)
        case BoolOp(operands=ops) | Compare(operands=ops):
            return tuple(ops)
        case Member(value=v, container=c):
            return (v, c)
        case Call(args=args) | ListLit(items=args):
            return tuple(args)
        case Crossed(left=a, right=b, left_prev=pa, right_prev=pb):
            return (a, b, pa, pb)
        case Scale(factor=f):
            return (f,)
        case LetDef(expr=e):
            return (e,)
        case Rule(when=w, actions=acts):
            return (w, *acts)
        case _:
            return ()


def cost(node: object) -> int:
    """What one node costs to evaluate, in nodes: a table lookup compares its key with each
    entry in turn; everything else is one."""
    return len(node.keys) if isinstance(node, Lookup) else 1


def depth(node: object) -> int:
    """Nesting depth of a tree, computed without recursion (the tree may be arbitrarily deep)."""
    best = 0
    stack: list[tuple[object, int]] = [(node, 1)]
    while stack:
        n, d = stack.pop()
        best = max(best, d)
        stack.extend((c, d + 1) for c in children(n))
    return best


def size(node: object) -> int:
    """Number of nodes in a tree, computed without recursion."""
    count = 0
    stack: list[object] = [node]
    while stack:
        n = stack.pop()
        count += 1
        stack.extend(children(n))
    return count
