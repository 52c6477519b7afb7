"""Why a rule fired or not, with numbers: every comparison's margin, and for a rule that did not
fire the smallest change of one feature that would make it fire (`s3 rules explain`).

Works on the checked rules (params are literals there, named by their text) with the reference
interpreter, so it needs nothing from the compiled code. Pure; imports nothing outside `dsl`.

- `margins(rule, snapshot, lets)`: for each comparison of the rule (lets expanded), its operands'
  values and by how much it held (> 0) or failed (< 0): `spread_bps 0.06 > 0.05` held by 0.01.
- `nearest_change(rule, snapshot, schema, lets)`: over the features the rule reads, the single
  change with the smallest relative size that makes the rule fire (no fault): a number moved
  just past the boundary of one of its comparisons, an enum or bool set to another value.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dsl import nodes as n
from dsl.checker import CheckedRule
from dsl.interpreter import eval_expr
from dsl.schema import Schema

_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_NUM = (int, float)
_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7}


def is_param(e: n.Expr) -> bool:
    return isinstance(e, n.Number) and not _is_numeral(e.text)


def _is_numeral(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _num(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def show(e: n.Expr, *, values: bool = True, outer: int = 0) -> str:
    """Source-like text of a checked expression; params as `name (value)` when ``values``."""
    match e:
        case n.Number(value=v, text=t):
            if _is_numeral(t):
                return t
            return f"{t} ({_num(v)})" if values else t
        case n.String(value=v):
            return f'"{v}"'
        case n.Bool(value=v):
            return "true" if v else "false"
        case n.ListLit(items=items):
            return "[" + ", ".join(show(i, values=values) for i in items) + "]"
        case n.FeatureRef(name=name) | n.LetRef(name=name) | n.Name(name=name):
            return name
        case n.Neg(operand=o):
            return _wrap("-" + show(o, values=values, outer=_PREC["neg"]), "neg", outer)
        case n.Not(operand=o):
            return _wrap("not " + show(o, values=values, outer=_PREC["not"]), "not", outer)
        case n.BinOp(op=op, left=a, right=b):
            p = _PREC[op]
            text = f"{show(a, values=values, outer=p)} {op} {show(b, values=values, outer=p + 1)}"
            return _wrap(text, op, outer)
        case n.BoolOp(op=op, operands=ops):
            p = _PREC[op]
            return _wrap(
                f" {op} ".join(show(o, values=values, outer=p + 1) for o in ops), op, outer
            )
        case n.Compare(operands=ops, ops=cmp):
            p = _PREC["cmp"]
            parts = [show(ops[0], values=values, outer=p + 1)]
            for op, o in zip(cmp, ops[1:], strict=True):
                parts += [op, show(o, values=values, outer=p + 1)]
            return _wrap(" ".join(parts), "cmp", outer)
        case n.Member(value=v, container=c, negated=neg):
            p = _PREC["cmp"]
            text = f"{show(v, values=values, outer=p + 1)} {'not in' if neg else 'in'} {show(c, values=values)}"
            return _wrap(text, "cmp", outer)
        case n.Call(func=f, args=args):
            return f"{f}(" + ", ".join(show(a, values=values) for a in args) + ")"
    return "?"


def _wrap(text: str, kind: str, outer: int) -> str:
    return f"({text})" if _PREC[kind] < outer else text


def params_of(e: n.Expr, lets: Mapping[str, n.Expr]) -> dict[str, Any]:
    """The params an expression reads (lets expanded), with their values."""
    return {x.text: x.value for x in _walk(e, lets) if isinstance(x, n.Number) and is_param(x)}


def _walk(
    e: n.Expr, lets: Mapping[str, n.Expr], seen: frozenset[str] = frozenset()
) -> Iterator[Any]:
    stack: list[Any] = [e]
    while stack:
        x = stack.pop()
        yield x
        if isinstance(x, n.LetRef) and x.name not in seen and x.name in lets:
            seen = seen | {x.name}
            stack.append(lets[x.name])
            continue
        for attr in ("operand", "left", "right", "value", "container"):
            child = getattr(x, attr, None)
            if child is not None and not isinstance(child, str | int | float | bool):
                stack.append(child)
        for attr in ("operands", "items", "args"):
            stack.extend(getattr(x, attr, ()) or ())


# -- margins ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Margin:
    """One comparison `left op right` (one link of a chain) on one snapshot."""

    text: str
    left: Any
    op: str
    right: Any
    held: bool | None
    """None: it could not be evaluated (a missing feature, a fault)."""
    margin: float | None
    """How far past (> 0) or short of (< 0) the boundary; None for non-numbers."""
    via: str | None = None
    """The let it is part of, if any."""

    def render(self) -> str:
        head = f"{self.text}: {_num(self.left)} {self.op} {_num(self.right)}"
        if self.held is None:
            return f"{self.text}: not evaluated ({self.left})"
        if self.margin is None:
            return f"{head} {'holds' if self.held else 'fails'}"
        if self.op in ("==", "!="):
            return f"{head} {'holds' if self.held else 'fails'} (apart by {_num(abs(self.margin))})"
        by = _num(abs(self.margin))
        return f"{head} {'holds' if self.held else 'fails'} by {by}"


def _margin(op: str, a: Any, b: Any) -> float | None:
    if (
        not (isinstance(a, _NUM) and isinstance(b, _NUM))
        or isinstance(a, bool)
        or isinstance(b, bool)
    ):
        return None
    if op in (">", ">="):
        return float(a - b)
    if op in ("<", "<="):
        return float(b - a)
    return float(a - b)


def margins(
    rule: CheckedRule, snapshot: Mapping[str, Any], lets: Mapping[str, n.Expr]
) -> list[Margin]:
    """Every comparison of the rule (lets expanded, each once), evaluated on its own."""
    out: list[Margin] = []
    seen_lets: set[str] = set()

    def visit(e: n.Expr, via: str | None) -> None:
        match e:
            case n.LetRef(name=name) if name in lets and name not in seen_lets:
                seen_lets.add(name)
                visit(lets[name], name)
            case n.Compare(operands=ops, ops=cmp):
                for i, op in enumerate(cmp):
                    a_e, b_e = ops[i], ops[i + 1]
                    text = f"{show(a_e)} {op} {show(b_e)}"
                    try:
                        a = eval_expr(a_e, snapshot, lets)
                        b = eval_expr(b_e, snapshot, lets)
                    except KeyError as exc:
                        out.append(
                            Margin(text, f"missing {exc.args[0]}", op, None, None, None, via)
                        )
                        continue
                    except Exception as exc:
                        out.append(Margin(text, f"fault: {exc}", op, None, None, None, via))
                        continue
                    out.append(Margin(text, a, op, b, bool(_CMP[op](a, b)), _margin(op, a, b), via))
                for o in ops:
                    visit(o, via)
            case _:
                for child in _children(e):
                    visit(child, via)

    visit(rule.when, None)
    return out


def _children(e: Any) -> list[Any]:
    kids: list[Any] = []
    for attr in ("operand", "left", "right", "value", "container"):
        c = getattr(e, attr, None)
        if c is not None and not isinstance(c, str | int | float | bool):
            kids.append(c)
    for attr in ("operands", "items", "args"):
        kids.extend(getattr(e, attr, ()) or ())
    return kids


# -- the smallest single-feature change -------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    feature: str
    old: Any
    new: Any
    size: float
    """Relative size of the change (|new - old| / max(|old|, 1e-12)); 1.0 for a non-number."""

    def render(self) -> str:
        if (
            isinstance(self.new, _NUM)
            and isinstance(self.old, _NUM)
            and not isinstance(self.new, bool)
        ):
            delta = self.new - self.old
            sign = "+" if delta >= 0 else ""
            shown = f"{self.new:.12g}"
            if self.new != 0 and abs(self.new) < 1e-100:  # a hair past zero
                value = f"just {'above' if self.new > 0 else 'below'} 0"
            elif float(shown) == self.new:
                value = f"= {shown}"
            else:  # a hair past a boundary: say so rather than print 17 digits
                value = f"just {'above' if delta > 0 else 'below'} {shown}"
            return f"{self.feature} {value} (now {_num(self.old)}, {sign}{_num(delta)})"
        return f"{self.feature} = {_num(self.new)} (now {_num(self.old)})"


def _fires(rule: CheckedRule, snap: Mapping[str, Any], lets: Mapping[str, n.Expr]) -> bool:
    try:
        return bool(eval_expr(rule.when, snap, lets))
    except Exception:  # a fault: the rule does not fire
        return False


def _depends(e: n.Expr, feature: str, lets: Mapping[str, n.Expr]) -> bool:
    return any(isinstance(x, n.FeatureRef) and x.name == feature for x in _walk(e, lets))


def _boundaries(
    rule: CheckedRule, feature: str, snap: Mapping[str, Any], lets: Mapping[str, n.Expr]
) -> Iterator[float]:
    """Values of ``feature`` at which one side of one of the rule's comparisons meets the other
    (the other side not depending on it), found by bisection on an expanding bracket."""
    cur = snap[feature]
    for x in _walk(rule.when, lets):
        if not isinstance(x, n.Compare):
            continue
        for i in range(len(x.ops)):
            a_e, b_e = x.operands[i], x.operands[i + 1]
            da, db = _depends(a_e, feature, lets), _depends(b_e, feature, lets)
            if da == db:
                continue
            moving, fixed = (a_e, b_e) if da else (b_e, a_e)
            try:
                target = eval_expr(fixed, snap, lets)
            except Exception:
                continue
            if not isinstance(target, _NUM) or isinstance(target, bool):
                continue

            def side(v: float, m: n.Expr = moving) -> float | None:
                return _value(m, snap, lets, feature, v)

            root = _solve(side, float(cur), float(target))
            if root is not None:
                yield root


def _value(
    e: n.Expr, snap: Mapping[str, Any], lets: Mapping[str, n.Expr], f: str, v: float
) -> float | None:
    try:
        out = eval_expr(e, {**snap, f: v}, lets)
    except Exception:
        return None
    return float(out) if isinstance(out, _NUM) and not isinstance(out, bool) else None


def _solve(g: Callable[[float], float | None], cur: float, target: float) -> float | None:
    """A v with g(v) == target, nearest ``cur`` that bisection finds (g assumed monotonic)."""
    g0 = g(cur)
    if g0 is None or not math.isfinite(g0):
        return None
    if g0 == target:
        return cur
    best: float | None = None
    for sign in (1.0, -1.0):
        step = max(abs(cur), 1e-9) * 1e-3
        lo, hi = cur, None
        for _ in range(80):
            v = cur + sign * step
            gv = g(v)
            if gv is not None and math.isfinite(gv) and (gv - target) * (g0 - target) <= 0:
                hi = v
                break
            if gv is not None and math.isfinite(gv):
                lo = v
            step *= 2
            if step > 1e18:
                break
        if hi is None:
            continue
        a, b = lo, hi
        for _ in range(100):
            m = (a + b) / 2
            if m in (a, b):
                break
            gm = g(m)
            if gm is None:
                break
            if (gm - target) * (g0 - target) <= 0:
                b = m
            else:
                a = m
        b = _round_root(g, b, target)
        if best is None or abs(b - cur) < abs(best - cur):
            best = b
    return best


def _round_root(g: Callable[[float], float | None], v: float, target: float) -> float:
    """The root with the fewest digits that still meets the target exactly (0.0003, not
    0.00029999999999999997), else ``v``."""
    for c in (0.0, *(float(f"{v:.{k}g}") for k in range(1, 16))):
        if g(c) == target:
            return c
    return v


def _nudges(v: float) -> Iterator[float]:
    yield v
    for k in (1, 4, 64, 4096):
        for d in (1, -1):
            step = abs(v) * 1e-12 * k if v else 1e-300 * k
            yield v + d * step
    for rel in (1e-9, 1e-6, 1e-4):
        yield v * (1 + rel) if v else rel
        yield v * (1 - rel) if v else -rel


def nearest_change(
    rule: CheckedRule, snapshot: Mapping[str, Any], schema: Schema, lets: Mapping[str, n.Expr]
) -> Change | None:
    """The smallest single-feature change that makes ``rule`` fire, or None if there is none
    (or the rule fires already)."""
    if _fires(rule, snapshot, lets):
        return None
    best: Change | None = None
    for feature in sorted(rule.features | _let_features(rule, lets)):
        if feature not in snapshot or feature not in schema.features:
            continue
        spec = schema.features[feature]
        cur = snapshot[feature]
        if spec.type == "enum":
            candidates: list[Any] = [v for v in spec.values if v != cur]
        elif spec.type == "bool":
            candidates = [not cur]
        elif spec.type in ("number", "int") and isinstance(cur, _NUM):
            candidates = sorted(
                {c for b in _boundaries(rule, feature, snapshot, lets) for c in _nudges(b)},
                key=lambda c: abs(c - cur),
            )
            if spec.type == "int":
                candidates = sorted(
                    {round(c) + d for c in candidates for d in (-1, 0, 1)},
                    key=lambda c: abs(c - cur),
                )
        else:
            continue
        for c in candidates:
            trial = {**snapshot, feature: c}
            if not _fires(rule, trial, lets):
                continue
            size = (
                abs(c - cur) / max(abs(cur), 1e-12)
                if isinstance(c, _NUM) and not isinstance(c, bool)
                else 1.0
            )
            if best is None or size < best.size:
                best = Change(feature, cur, c, size)
            break  # candidates are nearest first
    return best


def _let_features(rule: CheckedRule, lets: Mapping[str, n.Expr]) -> frozenset[str]:
    return frozenset(x.name for x in _walk(rule.when, lets) if isinstance(x, n.FeatureRef))
