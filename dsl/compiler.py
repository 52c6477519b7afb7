"""A checked bundle to one Python function, compiled once and run with no builtins.

Generated code reads the feature snapshot only as ``f['name']`` (and ``'name' in f`` for `has`),
calls only `dsl.runtime.HELPERS`, and has no loops, attribute access or imports, so its cost per
snapshot is bounded by the node count reported as `CompiledRuleset.cost`. No user text is ever
passed to ``eval``: names were checked against the schema and literals are emitted with ``repr``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from dsl import nodes as n
from dsl.checker import CheckedBundle, CheckedRule, constant_number
from dsl.printer import to_source
from dsl.runtime import HELPERS, Outcome, Raw, RuleInfo, TraceStep, build_outcome
from dsl.schema import OUTPUTS, Clamp, Schema, show

_ACC = {"size_mult": "_sm", "tp_mult": "_tm", "sl_mult": "_lm"}


@dataclass(frozen=True, slots=True)
class TraceNode:
    """A traced clause: which rule, how deep below the rule, and the node (for its text and span)."""

    rule: int
    depth: int
    node: n.Expr
    label: str = ""


class _Gen:
    def __init__(
        self, lets: Mapping[str, n.Expr], traced: bool, cached: frozenset[str] = frozenset()
    ):
        self.lets = lets
        self.traced = traced
        # Lets used more than once are computed at most once per snapshot (fast path only): a let
        # is a pure function of the snapshot, and one that faults is not stored, so every rule
        # that reads it still faults on its own.
        self.cached = cached
        self.table: list[TraceNode] = []
        self.rule_index = 0
        self.temps = 0

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def wrap(self, e: n.Expr, depth: int, body: Callable[[int], str], label: str = "") -> str:
        if not self.traced:
            return body(depth)
        k = len(self.table)
        self.table.append(TraceNode(self.rule_index, depth, e, label))
        return f"_w({k}, {body(depth + 1)})"

    def expr(self, e: n.Expr, d: int = 0, label: str = "") -> str:
        """Python text of ``e``; traced nodes are registered in pre-order, ``label`` on the top one."""
        w = (lambda node, depth, body: self.wrap(node, depth, body, label)) if label else self.wrap
        match e:
            case n.Number(value=v):
                return repr(v) if v >= 0 else f"({v!r})"
            case n.String(value=v):
                return repr(v)
            case n.Bool(value=v):
                return "True" if v else "False"
            case n.FeatureRef(name=name):
                return w(e, d, lambda _: f"f[{name!r}]")
            case n.LetRef(name=name) if name in self.cached and not self.traced:
                var = f"_L_{name}"
                return f"({var} if {var} is not _U else ({var} := {self.expr(self.lets[name])}))"
            case n.LetRef(name=name):
                return w(e, d, lambda dd: self.expr(self.lets[name], dd))
            case n.Neg(operand=o):
                return w(e, d, lambda dd: f"(-{self.expr(o, dd)})")
            case n.Not(operand=o):
                return w(e, d, lambda dd: f"(not {self.expr(o, dd)})")
            case n.BinOp(op=op, left=left, right=right):
                return w(e, d, lambda dd: f"({self.expr(left, dd)} {op} {self.expr(right, dd)})")
            case n.BoolOp(op=op, operands=ops):
                return w(e, d, lambda dd: "(" + f" {op} ".join(self.expr(o, dd) for o in ops) + ")")
            case n.Compare(operands=ops, ops=cmp):

                def chain(dd: int) -> str:
                    parts = [self.expr(ops[0], dd)]
                    for op, o in zip(cmp, ops[1:], strict=True):
                        parts += [op, self.expr(o, dd)]
                    return "(" + " ".join(parts) + ")"

                return w(e, d, chain)
            case n.Member(value=v, container=n.ListLit(items=items), negated=neg):
                literal = "{" + ", ".join(self.expr(i) for i in items) + "}" if items else "()"
                return w(
                    e, d, lambda dd: f"({self.expr(v, dd)} {'not in' if neg else 'in'} {literal})"
                )
            case n.Call(func="has", args=(n.FeatureRef(name=name),)):
                return w(e, d, lambda _: f"({name!r} in f)")
            case n.Call(func="log" | "sqrt" as func, args=(arg,)) if not self.traced:
                # The common case is one C call; the helper only runs to raise the fault.
                t = self.temp()
                test = "> 0" if func == "log" else ">= 0"
                return f"(_m{func}({t}) if ({t} := {self.expr(arg)}) {test} else _{func}({t}))"
            case n.Call(func=func, args=args):
                return w(
                    e, d, lambda dd: f"_{func}(" + ", ".join(self.expr(a, dd) for a in args) + ")"
                )
        raise TypeError(f"cannot compile {e!r}")

    def rule(self, r: CheckedRule) -> list[str]:
        self.rule_index = r.index
        i = r.index
        lines = [f"    # {r.rule_id}  {r.rule.span}", "    try:"]
        cond = self.expr(r.when, 0, "when")
        lines.append(f"        if {cond}:")
        body, applies = [], []
        for j, (target, fexpr) in enumerate(r.scales):
            const = constant_number(fexpr)
            acc = _ACC[target]
            if const is not None:
                applies.append(f"            {acc} *= {float(const)!r}")
                continue
            code = self.expr(fexpr, 0, f"{target} *=")
            if self.traced:
                body.append(f"            _k{j} = _factor({target!r}, {code})")
            else:  # _factor only runs to raise the fault (or to convert a huge int)
                t = self.temp()
                body.append(
                    f"            _k{j} = _float({t}) if 0.0 < ({t} := {code}) < 1e308 "
                    f"else _factor({target!r}, {t})"
                )
            applies.append(f"            {acc} *= _k{j}")
            applies.append(f"            dyn.append(({i}, {target!r}, _k{j}))")
        lines += body
        lines.append(f"            fired.append({i})")
        lines += applies
        lines += ["    except _Exception as _e:", f"        faults.append(({i}, _e))"]
        return lines


def _let_uses(rules: tuple[CheckedRule, ...], lets: Mapping[str, n.Expr]) -> dict[str, int]:
    """How many times each let is read once lets are substituted (bounded by the cost limit)."""
    uses: dict[str, int] = {}
    stack: list[object] = [x for r in rules for x in (r.when, *(f for _, f in r.scales))]
    while stack:
        node = stack.pop()
        if isinstance(node, n.LetRef):
            uses[node.name] = uses.get(node.name, 0) + 1
            if uses[node.name] == 1:  # walk a let's body once: later reads hit the cache
                stack.append(lets[node.name])
            continue
        stack.extend(n.children(node))
    return uses


def _function(
    name: str, rules: tuple[CheckedRule, ...], gen: _Gen, params: str
) -> tuple[str, dict[str, str]]:
    lines = [
        f"def {name}({params}):",
        "    fired = []",
        "    faults = []",
        "    dyn = []",
        "    _sm = 1.0",
        "    _tm = 1.0",
        "    _lm = 1.0",
    ]
    if gen.cached and not gen.traced:
        lines.append("    _U = _UNSET")
        lines += [f"    _L_{name} = _U" for name in sorted(gen.cached)]
    per_rule: dict[str, str] = {}
    for r in rules:
        chunk = gen.rule(r)
        per_rule[r.rule_id] = "\n".join(chunk)
        lines += chunk
    lines.append("    return fired, faults, dyn, _sm, _tm, _lm")
    return "\n".join(lines) + "\n", per_rule


@dataclass(frozen=True)
class CompiledRuleset:
    """A bundle's rules as compiled evaluators, plus what is needed to explain their results."""

    revision: int
    bundle_id: str
    rules: tuple[CheckedRule, ...]
    infos: tuple[RuleInfo, ...]
    clamp: Clamp
    schema: Schema
    source: str
    cost: int
    checked: CheckedBundle
    _fast: Callable[[Mapping[str, Any]], Raw] = field(repr=False)
    _per_rule: Mapping[str, str] = field(repr=False)

    def __post_init__(self) -> None:
        # `run` is the generated function itself: no wrapper call on the hot path.
        object.__setattr__(self, "run", self._fast)

    @cached_property
    def _tracer(self) -> tuple[Callable[..., Raw], tuple[TraceNode, ...]]:
        """The traced twin, compiled on first use (only `explain` and tests need it)."""
        gen = _Gen(self.checked.lets, traced=True)
        src, _ = _function("_evaluate_traced", self.rules, gen, "f, _w")
        fn = _exec(src, "_evaluate_traced", f"<bundle {self.bundle_id} rev {self.revision} traced>")
        return fn, tuple(gen.table)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.rule_id for r in self.rules)

    @cached_property
    def veto_rule_ids(self) -> frozenset[str]:
        """The ids of the rules that can veto (`skip_entry`)."""
        return frozenset(r.rule_id for r in self.rules if r.skip)

    def source_of(self, rule_id: str) -> str:
        """The generated Python of one rule, for golden tests and for the curious."""
        return self._per_rule[rule_id]

    def run(self, features: Mapping[str, Any]) -> Raw:  # replaced per instance by `_fast`
        """The hot path: evaluate a validated snapshot, returning the raw tuple."""
        return self._fast(features)

    def evaluate(self, features: Mapping[str, Any], *, trace: bool = False) -> Outcome:
        """Evaluate a snapshot that `Schema.validate` accepted; faults are recorded, never raised."""
        if not trace:
            return build_outcome(self._fast(features), self.infos, self.clamp, self.revision)
        values: dict[int, Any] = {}

        def record(k: int, v: Any) -> Any:
            values[k] = v
            return v

        traced, table = self._tracer
        raw = traced(features, record)
        steps = []
        for k, t in enumerate(table):
            rule = self.rules[t.rule]
            text = to_source(t.node)
            if t.label:
                text = f"{t.label} {text}"
            value = values.get(k)
            steps.append(
                TraceStep(
                    rule.rule_id,
                    t.depth,
                    text,
                    str(t.node.span),
                    k in values,
                    _trace_value(value),
                )
            )
        order = {r.rule_id: r.index for r in self.rules}
        steps.sort(key=lambda s: order[s.rule_id])  # stable: keeps pre-order within a rule
        return build_outcome(raw, self.infos, self.clamp, self.revision, tuple(steps))


def _trace_value(value: Any) -> bool | int | float | str | None:
    """A traced value as JSON can carry it: integers beyond 64 bits become floats (or text)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 63:
        try:
            return float(value)
        except OverflowError:
            return show(value)
    return value if isinstance(value, bool | int | float | str) else None


def _exec(src: str, name: str, filename: str) -> Callable[..., Raw]:
    namespace: dict[str, Any] = {
        "__builtins__": {},
        "_Exception": Exception,
        "_UNSET": _UNSET,
        "_float": float,
        "_mlog": math.log,
        "_msqrt": math.sqrt,
        **HELPERS,
    }
    exec(compile(src, filename, "exec"), namespace)  # our generated code only, never user text
    fn: Callable[..., Raw] = namespace[name]
    return fn


_UNSET = object()


def compile_ruleset(
    checked: CheckedBundle, *, revision: int = 0, bundle_id: str = "bundle"
) -> CompiledRuleset:
    """Compile a checked bundle into one evaluator function (a traced twin is built on demand).

    Args:
        checked: the output of `dsl.check`.
        revision: the bundle's rev, carried into every `Outcome`.
        bundle_id: used to name the generated code in tracebacks.
    """
    uses = _let_uses(checked.rules, checked.lets)
    cached = frozenset(name for name, count in uses.items() if count > 1)
    gen = _Gen(checked.lets, traced=False, cached=cached)
    src, per_rule = _function("_evaluate", checked.rules, gen, "f")
    fast = _exec(src, "_evaluate", f"<bundle {bundle_id} rev {revision}>")
    assert all(t in OUTPUTS for r in checked.rules for t, _ in r.scales)
    return CompiledRuleset(
        revision,
        bundle_id,
        checked.rules,
        checked.rule_infos(),
        checked.clamp,
        checked.schema,
        src,
        checked.cost,
        checked,
        fast,
        per_rule,
    )
