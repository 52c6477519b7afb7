"""Constant folding over expression nodes: what the checker, lints, interpreter and compiler share.

Imports only `dsl.nodes`, so `dsl.lints` and `dsl.interpreter` need nothing at run time from
`dsl.checker` (which calls the lints): the import graph has no circle (tests/test_architecture.py).
"""

from __future__ import annotations

from dsl import nodes as n


def constant_number(e: n.Expr) -> float | None:
    """The value of a number literal, possibly negated (``-2``); None for anything else."""
    match e:
        case n.Number(value=v):
            return float(v)
        case n.Neg(operand=o):
            c = constant_number(o)
            return None if c is None else -c
    return None
