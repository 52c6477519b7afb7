"""A slow, obviously correct evaluator over checked nodes: the oracle the compiler is tested against.

It follows the language's definition step by step (left to right, short-circuit `and`/`or`,
chained comparisons evaluating each operand once) and shares only the helpers of `dsl.runtime`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from dsl import nodes as n
from dsl.fold import constant_number
from dsl.runtime import HELPERS, Outcome, Raw, build_outcome, factor
from dsl.schema import history_key

if TYPE_CHECKING:
    from dsl.checker import CheckedBundle  # types only: dsl.checker calls the lints at run time

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def eval_expr(e: n.Expr, features: Mapping[str, Any], lets: Mapping[str, n.Expr]) -> Any:
    """The value of one checked expression; faults propagate as exceptions."""
    match e:
        case n.Number(value=v) | n.String(value=v) | n.Bool(value=v):
            return v
        case n.FeatureRef(name=name, lag=lag):
            return features[history_key(name, lag)]
        case n.Lookup(key=k, keys=keys, values=table):
            return dict(zip(keys, table, strict=True))[eval_expr(k, features, lets)]
        case n.Crossed(op=op, left=a, right=b, left_prev=pa, right_prev=pb):
            values = [eval_expr(x, features, lets) for x in (a, b, pa, pb)]
            cross = HELPERS[f"_crossed_{op}"]
            assert callable(cross)
            return cross(*values)
        case n.LetRef(name=name):
            return eval_expr(lets[name], features, lets)
        case n.Neg(operand=o):
            return -eval_expr(o, features, lets)
        case n.Not(operand=o):
            return not eval_expr(o, features, lets)
        case n.BinOp(op=op, left=left, right=right):
            a = eval_expr(left, features, lets)
            b = eval_expr(right, features, lets)
            return _ARITH[op](a, b)
        case n.BoolOp(op="and", operands=ops):
            return all(eval_expr(o, features, lets) for o in ops)
        case n.BoolOp(op="or", operands=ops):
            return any(eval_expr(o, features, lets) for o in ops)
        case n.Compare(operands=ops, ops=cmp):
            left = eval_expr(ops[0], features, lets)
            for op, o in zip(cmp, ops[1:], strict=True):
                right = eval_expr(o, features, lets)
                if not _COMPARE[op](left, right):
                    return False
                left = right
            return True
        case n.Member(value=v, container=n.ListLit(items=items), negated=neg):
            x = eval_expr(v, features, lets)
            found = any(x == eval_expr(i, features, lets) for i in items)
            return not found if neg else found
        case n.Call(func="has", args=(n.FeatureRef(name=name),)):
            return name in features
        case n.Convert(operand=o, mul=mul, div=div):
            x = eval_expr(o, features, lets)
            if mul == div == 1.0:
                return x
            return x * mul if div == 1.0 else x / div
        case n.Call(func="count_true", args=args):
            values = [eval_expr(a, features, lets) for a in args]  # all of them, in order
            return sum(1 for v in values if v)
        case n.Call(func=func, args=args):
            values = [eval_expr(a, features, lets) for a in args]
            helper = HELPERS[f"_{func}"]
            assert callable(helper)
            return helper(*values)
    raise TypeError(f"cannot evaluate {e!r}")


def run(checked: CheckedBundle, features: Mapping[str, Any]) -> Raw:
    """Evaluate every rule in order, with the same result shape as the compiled evaluator."""
    fired: list[int] = []
    faults: list[tuple[int, BaseException]] = []
    dyn: list[tuple[int, str, float]] = []
    acc = {"size_mult": 1.0, "tp_mult": 1.0, "sl_mult": 1.0}
    for r in checked.rules:
        try:
            if not eval_expr(r.when, features, checked.lets):
                continue
            values = []
            for target, fexpr in r.scales:
                const = constant_number(fexpr)
                if const is not None:
                    values.append((target, float(const), False))
                else:
                    values.append(
                        (target, factor(target, eval_expr(fexpr, features, checked.lets)), True)
                    )
        except Exception as exc:  # a fault of this rule: recorded, and the rule does not fire
            faults.append((r.index, exc))
            continue
        fired.append(r.index)
        for target, value, dynamic in values:
            acc[target] *= value
            if dynamic:
                dyn.append((r.index, target, value))
    return fired, faults, dyn, acc["size_mult"], acc["tp_mult"], acc["sl_mult"]


def interpret(checked: CheckedBundle, features: Mapping[str, Any], *, revision: int = 0) -> Outcome:
    infos = checked.rule_infos()
    return build_outcome(run(checked, features), infos, checked.clamp, revision)
