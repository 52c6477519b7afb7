"""A checked bundle to one Python function, compiled once and run with no builtins.

Generated code reads the feature snapshot only as ``f['name']`` (and ``'name' in f`` for `has`),
calls only `dsl.runtime.HELPERS`, and has no loops, attribute access or imports, so its cost per
snapshot is bounded by the node count reported as `CompiledRuleset.cost`. No text from a bundle
reaches the generated source except through ``repr`` of a checked value (feature names, strings,
rule ids and places in comments); operators and helper names are looked up in fixed tables, and
cached lets are numbered, not named. Before it is compiled the module must pass the allowlist of
`dsl.guard.verify`, and it is executed and run under the audit-hook tripwire of `dsl.guard`.
"""

from __future__ import annotations

import ast
import gc
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from dsl import guard
from dsl import nodes as n
from dsl.checker import CheckedBundle, CheckedRule, constant_number
from dsl.errors import Diagnostic, DslError
from dsl.printer import to_source
from dsl.runtime import (
    HELPERS,
    Fault,
    Outcome,
    Raw,
    RuleInfo,
    TraceStep,
    build_outcome,
    fault_of,
)
from dsl.schema import OUTPUTS, Clamp, Schema, history_key, show

_ACC = {"size_mult": "_sm", "tp_mult": "_tm", "sl_mult": "_lm"}
# Fixed tables: an operator or function the checker let through but that is not here is a
# compiler error (KeyError), never text pasted into the module.
_BINOPS = {op: op for op in ("+", "-", "*", "/")}
_BOOLOPS = {op: op for op in ("and", "or")}
_COMPARE = {op: op for op in ("<", "<=", ">", ">=", "==", "!=")}
_FUNCS = {name[1:]: name for name in HELPERS if name != "_factor"}


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
        self.let_index = {name: k for k, name in enumerate(sorted(cached))}

    def let_var(self, name: str) -> str:
        """The local variable caching a let: numbered in name order, never the let's own name."""
        return f"_L{self.let_index[name]}"

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def wrap(self, e: n.Expr, depth: int, body: Callable[[int], str], label: str = "") -> str:
        if not self.traced:
            return body(depth)
        k = len(self.table)
        self.table.append(TraceNode(self.rule_index, depth, e, label))
        return f"_w(_s({k}), {body(depth + 1)})"  # _s runs first: the clause has started

    def expr(self, e: n.Expr, d: int = 0, label: str = "") -> str:
        """Python text of ``e``; traced nodes are registered in pre-order, ``label`` on the top one."""
        w = (lambda node, depth, body: self.wrap(node, depth, body, label)) if label else self.wrap
        match e:
            case n.Number(value=v):
                if type(v) not in (int, float) or not math.isfinite(v):
                    raise TypeError(f"cannot compile the number {v!r}")
                return repr(v) if v >= 0 else f"({v!r})"
            case n.String(value=v):
                return repr(v)
            case n.Bool(value=v):
                return "True" if v else "False"
            case n.FeatureRef(name=name, lag=lag):
                key = history_key(name, lag)
                return w(e, d, lambda _: f"f[{key!r}]")
            case n.Lookup(key=k, keys=keys, values=table):
                for v in table:
                    if type(v) not in (int, float) or not math.isfinite(v):
                        raise TypeError(f"cannot compile the table entry {v!r}")

                def lookup(dd: int) -> str:
                    # complete over the key's enum (checked), so the last entry needs no test
                    t = self.temp()
                    parts = [f"{table[0]!r} if ({t} := {self.expr(k, dd)}) == {keys[0]!r}"]
                    parts += [
                        f"{v!r} if {t} == {key!r}"
                        for key, v in zip(keys[1:-1], table[1:-1], strict=True)
                    ]
                    return "(" + " else ".join(parts) + f" else {table[-1]!r})"

                return w(e, d, lookup)
            case n.Crossed(op=op, left=a, right=b, left_prev=pa, right_prev=pb):
                helper = _FUNCS[f"crossed_{op}"]
                return w(
                    e,
                    d,
                    lambda dd: (
                        f"{helper}(" + ", ".join(self.expr(x, dd) for x in (a, b, pa, pb)) + ")"
                    ),
                )
            case n.LetRef(name=name) if name in self.cached and not self.traced:
                var = self.let_var(name)
                return f"({var} if {var} is not _U else ({var} := {self.expr(self.lets[name])}))"
            case n.LetRef(name=name):
                return w(e, d, lambda dd: self.expr(self.lets[name], dd))
            case n.Neg(operand=o):
                return w(e, d, lambda dd: f"(-{self.expr(o, dd)})")
            case n.Not(operand=o):
                return w(e, d, lambda dd: f"(not {self.expr(o, dd)})")
            case n.BinOp(op=op, left=left, right=right):
                op = _BINOPS[op]
                return w(e, d, lambda dd: f"({self.expr(left, dd)} {op} {self.expr(right, dd)})")
            case n.BoolOp(op=op, operands=ops):
                op = _BOOLOPS[op]
                return w(e, d, lambda dd: "(" + f" {op} ".join(self.expr(o, dd) for o in ops) + ")")
            case n.Compare(operands=ops, ops=cmp):

                def chain(dd: int) -> str:
                    parts = [self.expr(ops[0], dd)]
                    for op, o in zip(cmp, ops[1:], strict=True):
                        parts += [_COMPARE[op], self.expr(o, dd)]
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
                m = {"log": "_mlog", "sqrt": "_msqrt"}[func]
                return f"({m}({t}) if ({t} := {self.expr(arg)}) {test} else {_FUNCS[func]}({t}))"
            case n.Convert(operand=o, mul=mul, div=div):
                for scale_by in (mul, div):
                    if type(scale_by) is not float or not math.isfinite(scale_by) or scale_by <= 0:
                        raise TypeError(f"cannot compile the conversion factor {scale_by!r}")
                if mul == div == 1.0:
                    return w(e, d, lambda dd: self.expr(o, dd))
                scale = f"* {mul!r}" if div == 1.0 else f"/ {div!r}"
                return w(e, d, lambda dd: f"({self.expr(o, dd)} {scale})")
            case n.Call(func="count_true", args=args):
                # every condition is evaluated (no short circuit); True + True == 2
                return w(
                    e,
                    d,
                    lambda dd: "(" + " + ".join(["0", *(self.expr(a, dd) for a in args)]) + ")",
                )
            case n.Call(func=func, args=args):
                helper = _FUNCS[func]
                return w(
                    e, d, lambda dd: f"{helper}(" + ", ".join(self.expr(a, dd) for a in args) + ")"
                )
        raise TypeError(f"cannot compile {e!r}")

    def rule(self, r: CheckedRule) -> list[str]:
        self.rule_index = r.index
        i = r.index
        lines = [f"    # {r.rule_id!r} at {str(r.rule.span)!r}", "    try:"]
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
        lines += [f"    {gen.let_var(name)} = _U" for name in sorted(gen.cached)]
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
        src, _ = _function("_evaluate_traced", self.rules, gen, "f, _w, _s")
        fn = exec_generated(
            src,
            "_evaluate_traced",
            ("f", "_w", "_s"),
            f"{guard.GENERATED_PREFIX}{self.bundle_id} rev {self.revision} traced>",
        )
        return fn, tuple(gen.table)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.rule_id for r in self.rules)

    @cached_property
    def veto_rule_ids(self) -> frozenset[str]:
        """The ids of the rules that can veto (`skip_entry`)."""
        return frozenset(r.rule_id for r in self.rules if r.skip)

    def faulted_vetoes(self, outcome: Outcome) -> tuple[Fault, ...]:
        """The faults of veto (`skip_entry`) rules, in evaluation order: with the engine's
        ``veto_on_rule_fault`` the first of them skips the entry (RULE.FAULT) when no rule vetoed.
        `s3 rules explain` and the engine both decide with this."""
        if not outcome.faults:
            return ()
        skip = self.veto_rule_ids
        return tuple(f for f in outcome.faults if f.rule_id in skip)

    def source_of(self, rule_id: str) -> str:
        """The generated Python of one rule, for golden tests and for the curious."""
        return self._per_rule[rule_id]

    def run(self, features: Mapping[str, Any]) -> Raw:  # replaced per instance by `_fast`
        """The hot path: evaluate a validated snapshot, returning the raw tuple."""
        return self._fast(features)

    def evaluate(self, features: Mapping[str, Any], *, trace: bool = False) -> Outcome:
        """Evaluate a snapshot that `Schema.validate` accepted; faults are recorded, never raised."""
        if not trace:
            # The hot path is not armed (arming costs ~3 % of an evaluation): the tripwire
            # still refuses every watched event while generated code is on the stack.
            return build_outcome(self._fast(features), self.infos, self.clamp, self.revision)
        values: dict[int, Any] = {}
        started: list[int] = []

        def record(k: int, v: Any) -> Any:
            values[k] = v
            return v

        def start(k: int) -> int:
            started.append(k)
            return k

        traced, table = self._tracer  # compiled (if not yet) before arming
        with guard.armed():
            raw = traced(features, record, start)
        # Where each faulting rule faulted: the clause started last that never finished (its
        # operands, started after it, all finished; its enclosing clauses are unfinished too).
        # A factor that is not positive faults after every clause finished: then it is the
        # factor's own clause (the last labelled one started).
        faulted = {i: exc for i, exc in raw[1]}
        fault_at: dict[int, str] = {}
        placed: set[int] = set()
        for unfinished_only in (True, False):
            for k in reversed(started):
                ri = table[k].rule
                fits = k not in values if unfinished_only else bool(table[k].label)
                if ri in faulted and ri not in placed and fits:
                    code, message = fault_of(faulted[ri])
                    fault_at[k] = f"{code} {message}"
                    placed.add(ri)
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
                    fault_at.get(k),
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


_UNSET = object()


def _namespace() -> dict[str, Any]:
    return {
        "__builtins__": {},
        "_Exception": Exception,
        "_UNSET": _UNSET,
        "_float": float,
        "_mlog": math.log,
        "_msqrt": math.sqrt,
        **HELPERS,
        guard.MARK: guard.MARKER,  # how the audit hook knows a generated frame
    }


_HELPER_NAMES = frozenset(
    k for k in _namespace() if k not in ("__builtins__", "_Exception", "_UNSET", guard.MARK)
)


class GeneratedCodeError(DslError):
    """The generated module failed the allowlist or tripped the audit hook: a compiler bug (E311)."""


def exec_generated(
    src: str, name: str, params: tuple[str, ...], filename: str
) -> Callable[..., Raw]:
    """Verify a generated module against the allowlist, then compile it and run it armed.

    Args:
        src: the module's text, as the code generator wrote it.
        name: the one function it defines (returned).
        params: that function's parameters.
        filename: the name it is compiled under (starts with `guard.GENERATED_PREFIX`).

    Raises:
        GeneratedCodeError: E311, when the module fails the allowlist or trips the audit hook
            while it is executed; nothing of a module that fails the allowlist is run.
    """
    if not filename.startswith(guard.GENERATED_PREFIX):
        raise ValueError(f"generated code is compiled as {guard.GENERATED_PREFIX}...>")
    collecting = gc.isenabled()
    gc.disable()  # the tree is ~20 objects per node and holds no cycles: no collections for it
    try:
        tree = ast.parse(src, filename)
        problems = guard.verify(tree, name, params, _HELPER_NAMES)
        code = None if problems else compile(tree, filename, "exec")
        del tree
    finally:
        if collecting:
            gc.enable()
    if code is None:
        raise _rejected(filename, "; ".join(problems))
    namespace = _namespace()
    guard.install()
    try:
        with guard.armed(exec_ok=code):
            exec(code, namespace)  # verified generated code only, never user text
    except guard.SandboxViolation as exc:
        raise _rejected(filename, str(exc)) from None
    fn: Callable[..., Raw] = namespace[name]
    return fn


def _rejected(filename: str, why: str) -> GeneratedCodeError:
    return GeneratedCodeError(
        [
            Diagnostic(
                "E311",
                f"generated code for {filename} refused: {why}",
                None,
                "this is a bug of the rule compiler, not of the bundle: please report it; "
                "nothing of it was run",
            )
        ]
    )


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
    fast = exec_generated(
        src, "_evaluate", ("f",), f"{guard.GENERATED_PREFIX}{bundle_id} rev {revision}>"
    )
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
