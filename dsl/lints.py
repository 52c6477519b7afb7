"""Warnings about rules that type-check but are probably wrong.

W201 a rule that can never fire (constant false, contradictory bounds on one feature, always faults),
W202 a condition that is always true, W203 a clause repeated in one `and`/`or`, W204 two rules with
the same condition, W205 a factor that always hits the clamp. Imports nothing outside `dsl`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dsl import nodes as n
from dsl.errors import Diagnostic, Severity
from dsl.fold import constant_number
from dsl.interpreter import eval_expr
from dsl.printer import to_source
from dsl.runtime import fault_of
from dsl.schema import OUTPUTS, Clamp, history_key
from dsl.source import Span

if TYPE_CHECKING:
    from dsl.checker import CheckedRule  # types only: dsl.checker calls the lints at run time

_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def _warn(code: str, message: str, span: Span, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code, message, span, hint, Severity.WARNING)


def _expand(e: n.Expr, lets: Mapping[str, n.Expr]) -> n.Expr:
    while isinstance(e, n.LetRef):
        e = lets[e.name]
    return e


def _reads_features(e: object, lets: Mapping[str, n.Expr]) -> bool:
    stack = [e]
    while stack:
        node = stack.pop()
        if isinstance(node, n.FeatureRef):
            return True
        if isinstance(node, n.LetRef):
            stack.append(lets[node.name])
        stack.extend(n.children(node))
    return False


def _conjuncts(e: n.Expr, lets: Mapping[str, n.Expr]) -> Iterator[n.Expr]:
    e = _expand(e, lets)
    if isinstance(e, n.BoolOp) and e.op == "and":
        for o in e.operands:
            yield from _conjuncts(o, lets)
    else:
        yield e


@dataclass
class _Bounds:
    lo: tuple[float, bool, str] | None = None  # value, strict, clause text
    hi: tuple[float, bool, str] | None = None
    allowed: tuple[frozenset[object], str] | None = None
    banned: set[object] = field(default_factory=set)

    def lower(self, v: float, strict: bool, text: str) -> None:
        if self.lo is None or v > self.lo[0] or (v == self.lo[0] and strict):
            self.lo = (v, strict, text)

    def upper(self, v: float, strict: bool, text: str) -> None:
        if self.hi is None or v < self.hi[0] or (v == self.hi[0] and strict):
            self.hi = (v, strict, text)

    def only(self, values: frozenset[object], text: str) -> str | None:
        if self.allowed is None:
            self.allowed = (values, text)
            return None
        both = self.allowed[0] & values
        if not both:
            return f"{self.allowed[1]} and {text} cannot both hold"
        self.allowed = (both, self.allowed[1])
        return None

    def conflict(self) -> str | None:
        if self.lo and self.hi:
            (lv, ls, lt), (hv, hs, ht) = self.lo, self.hi
            if lv > hv or (lv == hv and (ls or hs)):
                return f"{lt} cannot hold" if lt == ht else f"{lt} and {ht} cannot both hold"
        if self.allowed is not None:
            values, text = self.allowed
            left = {v for v in values if v not in self.banned}
            for v in list(left):
                if isinstance(v, int | float) and not isinstance(v, bool):
                    if self.lo and (v < self.lo[0] or (v == self.lo[0] and self.lo[1])):
                        return f"{text} and {self.lo[2]} cannot both hold"
                    if self.hi and (v > self.hi[0] or (v == self.hi[0] and self.hi[1])):
                        return f"{text} and {self.hi[2]} cannot both hold"
            if not left:
                return f"{text} excludes every value it allows"
        return None


def _const(e: n.Expr) -> object | None:
    if isinstance(e, n.String | n.Bool):
        return e.value
    return constant_number(e)


def _contradiction(rule: CheckedRule, lets: Mapping[str, n.Expr]) -> str | None:
    bounds: dict[str, _Bounds] = {}
    for clause in _conjuncts(rule.when, lets):
        text = to_source(clause)
        match clause:
            case n.Compare(operands=ops, ops=cmp):
                for op, a, b in zip(cmp, ops, ops[1:], strict=False):
                    a, b = _expand(a, lets), _expand(b, lets)
                    if isinstance(b, n.FeatureRef) and not isinstance(a, n.FeatureRef):
                        a, b, op = b, a, _FLIP[op]
                    c = _const(b)
                    if not isinstance(a, n.FeatureRef) or c is None:
                        continue
                    bd = bounds.setdefault(history_key(a.name, a.lag), _Bounds())
                    numeric = isinstance(c, int | float) and not isinstance(c, bool)
                    if op in ("<", "<=") and numeric:
                        bd.upper(float(c), op == "<", text)  # type: ignore[arg-type]
                    elif op in (">", ">=") and numeric:
                        bd.lower(float(c), op == ">", text)  # type: ignore[arg-type]
                    elif op == "==":
                        why = bd.only(frozenset({c}), text)
                        if why:
                            return why
                    elif op == "!=":
                        bd.banned.add(c)
            case n.Call(func="between", args=(n.FeatureRef(name=name, lag=0), lo, hi)):
                lo_c, hi_c = constant_number(lo), constant_number(hi)
                bd = bounds.setdefault(name, _Bounds())
                if lo_c is not None:
                    bd.lower(lo_c, False, text)
                if hi_c is not None:
                    bd.upper(hi_c, False, text)
            case n.Member(
                value=n.FeatureRef(name=name, lag=0),
                container=n.ListLit(items=items),
                negated=neg,
            ):
                values = frozenset(v for i in items if (v := _const(i)) is not None)
                bd = bounds.setdefault(name, _Bounds())
                if neg:
                    bd.banned |= values
                else:
                    why = bd.only(values, text)
                    if why:
                        return why
            case n.FeatureRef(name=name):
                why = bounds.setdefault(name, _Bounds()).only(frozenset({True}), text)
                if why:
                    return why
            case n.Not(operand=n.FeatureRef(name=name)):
                why = bounds.setdefault(name, _Bounds()).only(frozenset({False}), text)
                if why:
                    return why
    for bd in bounds.values():
        why = bd.conflict()
        if why:
            return why
    return None


def _duplicates(rule: CheckedRule) -> Iterator[Diagnostic]:
    stack: list[object] = [rule.when]
    while stack:
        node = stack.pop()
        if isinstance(node, n.BoolOp):
            seen: list[n.Expr] = []
            for o in node.operands:
                if o in seen:
                    yield _warn(
                        "W203",
                        f"the condition '{to_source(o)}' appears twice in rule {rule.rule_id}",
                        o.span,
                        "remove the repeated clause",
                    )
                seen.append(o)
        stack.extend(n.children(node))


def _clamp_hits(rules: Sequence[CheckedRule], clamp: Clamp) -> Iterator[Diagnostic]:
    for out in OUTPUTS:
        b = clamp.bounds(out)
        consts: list[tuple[CheckedRule, n.Scale | None, float]] = []
        dynamic = False
        for r in rules:
            for target, e in r.scales:
                if target != out:
                    continue
                c = constant_number(e)
                if c is None:
                    dynamic = True
                else:
                    consts.append((r, None, c))
        if dynamic:
            continue  # a dynamic factor could bring any product back inside the bounds
        # The extreme products of the *other* rules' factors, for every rule at once: prefix and
        # suffix products over the rules (one rule's factors are contiguous), so the lint is
        # linear in the number of factors instead of comparing every rule with every other.
        lows = [min(x, 1.0) for _, _, x in consts]
        highs = [max(x, 1.0) for _, _, x in consts]
        groups: list[tuple[int, int]] = []  # [start, end) of each rule's factors in `consts`
        for k, (r, _, _) in enumerate(consts):
            if groups and consts[groups[-1][0]][0] is r:
                groups[-1] = (groups[-1][0], k + 1)
            else:
                groups.append((k, k + 1))
        before_low, before_high = [1.0], [1.0]
        for lo, hi in groups:
            before_low.append(before_low[-1] * math.prod(lows[lo:hi]))
            before_high.append(before_high[-1] * math.prod(highs[lo:hi]))
        after_low, after_high = [1.0], [1.0]
        for lo, hi in reversed(groups):
            after_low.append(after_low[-1] * math.prod(lows[lo:hi]))
            after_high.append(after_high[-1] * math.prod(highs[lo:hi]))
        group_of = [g for g, (lo, hi) in enumerate(groups) for _ in range(lo, hi)]
        for k, (r, _, c) in enumerate(consts):
            g = group_of[k]
            low = c * before_low[g] * after_low[len(groups) - 1 - g]
            high = c * before_high[g] * after_high[len(groups) - 1 - g]
            if low > b.max:
                yield _warn(
                    "W205",
                    f"{out} *= {c:g} in rule {r.rule_id} always hits the clamp: the product is at "
                    f"least {low:g} when it fires, above the bound {b.max:g}",
                    r.rule.id_span,
                )
            elif high < b.min:
                yield _warn(
                    "W205",
                    f"{out} *= {c:g} in rule {r.rule_id} always hits the clamp: the product is at "
                    f"most {high:g} when it fires, below the bound {b.min:g}",
                    r.rule.id_span,
                )


def lint_bundle(
    rules: Sequence[CheckedRule], lets: Mapping[str, n.Expr], clamp: Clamp
) -> list[Diagnostic]:
    """Every warning for a bundle whose rules type-checked."""
    out: list[Diagnostic] = []
    first_with: dict[n.Expr, CheckedRule] = {}
    for r in rules:
        span = r.rule.id_span
        if not _reads_features(r.when, lets):
            try:
                value = eval_expr(r.when, {}, lets)
            except Exception as exc:
                code, message = fault_of(exc)
                out.append(
                    _warn(
                        "W201",
                        f"rule {r.rule_id} can never fire: its condition always faults "
                        f"({code} {message})",
                        span,
                    )
                )
            else:
                if value:
                    out.append(
                        _warn(
                            "W202",
                            f"the condition of rule {r.rule_id} is always true",
                            span,
                            "a rule that always fires is a constant factor: fold it into the others or drop it",
                        )
                    )
                else:
                    out.append(
                        _warn(
                            "W201",
                            f"rule {r.rule_id} can never fire: its condition is always false",
                            span,
                        )
                    )
        else:
            why = _contradiction(r, lets)
            if why:
                out.append(_warn("W201", f"rule {r.rule_id} can never fire: {why}", span))
        out.extend(_duplicates(r))
        try:
            earlier = first_with.get(r.when)
        except TypeError:  # unhashable literal inside; cannot happen with frozen nodes, but be safe
            earlier = None
        if earlier is not None:
            out.append(
                _warn(
                    "W204",
                    f"rule {r.rule_id} has the same condition as rule {earlier.rule_id}",
                    span,
                    f"{earlier.rule_id} is at {earlier.rule.span}; merge the two",
                )
            )
        else:
            first_with[r.when] = r
    out.extend(_clamp_hits(rules, clamp))
    return out
