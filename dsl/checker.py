"""Names, types, whitelists and guards: parsed modules to a `CheckedBundle`, or every error at once.

Every name resolves to a declared feature, a `let` or a param (params become literals); every
function and action is checked against a whitelist held as data; optional features must be read
under a `has()` guard. Warnings (rules that can never fire, constant conditions, duplicates,
factors that always hit the clamp) come from `dsl.lints`. Imports nothing outside `dsl`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from dsl import nodes as n
from dsl.errors import Diagnostic, DslError, Severity, sort_and_cap
from dsl.fold import constant_number as constant_number  # re-exported: compiler, replay
from dsl.printer import to_source
from dsl.runtime import RuleInfo
from dsl.schema import OUTPUTS, Clamp, FeatureSpec, ParamTable, Schema, history_key
from dsl.source import Span
from dsl.suggest import did_you_mean
from dsl.units import (
    CONVERSIONS,
    LITERAL,
    ONE,
    UNKNOWN,
    Unit,
    conversion,
    conversion_hint,
    first_mismatch,
    parse_unit,
    unify,
)

MAX_INLINED_DEPTH = 80
"""Deepest an expression may get once lets are substituted (E109). The traced evaluator nests two
parentheses per level and CPython accepts 200, so this bound keeps `explain` compilable."""
MAX_INLINED_NODES = 20_000
"""Most nodes a rule may evaluate once lets are substituted (E109): the cost bound per rule."""


@dataclass(frozen=True, slots=True)
class Type:
    kind: str  # number | int | string | bool | enum | list | error
    values: tuple[str, ...] = ()
    unit: Unit = field(default=UNKNOWN, compare=False, hash=False)
    """Of a number: its unit (`dsl.units`); never part of type equality."""

    def __str__(self) -> str:
        return self.kind

    def with_unit(self, unit: Unit) -> Type:
        return Type(self.kind, self.values, unit)

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("number", "int", "error")

    @property
    def is_stringy(self) -> bool:
        return self.kind in ("string", "enum", "error")


NUMBER, INT, STRING, BOOL, LIST, ERROR = (
    Type(k) for k in ("number", "int", "string", "bool", "list", "error")
)

# Capabilities as data (as OPA does): name -> (min args, max args or None).
FUNCTIONS: Mapping[str, tuple[int, int | None]] = {
    "abs": (1, 1),
    "min": (2, None),
    "max": (2, None),
    "clamp": (3, 3),
    "log": (1, 1),
    "sqrt": (1, 1),
    "between": (3, 3),
    "has": (1, 1),
    "prev": (1, 2),
    "count_true": (1, None),
    "between_wrap": (3, 3),
    "hour_utc": (1, 1),
    "minute_of_day_utc": (1, 1),
    "weekday_utc": (1, 1),
    "crossed_above": (2, 2),
    "crossed_below": (2, 2),
    **{name: (1, 1) for name in CONVERSIONS},
}
ACTIONS = ("size_mult", "tp_mult", "sl_mult", "skip_entry")


@dataclass(frozen=True)
class CheckedRule:
    """A rule with every name resolved, in evaluation order (priority desc, then file order)."""

    rule: n.Rule
    when: n.Expr
    scales: tuple[tuple[str, n.Expr], ...]
    skip: bool
    index: int
    features: frozenset[str]
    cost: int

    @property
    def rule_id(self) -> str:
        return self.rule.rule_id


@dataclass(frozen=True)
class CheckedBundle:
    """The output of `check`: what the compiler and the interpreter consume."""

    rules: tuple[CheckedRule, ...]
    lets: Mapping[str, n.Expr]
    schema: Schema
    clamp: Clamp
    warnings: tuple[Diagnostic, ...]
    texts: Mapping[str, str] = field(default_factory=dict)

    @property
    def cost(self) -> int:
        """Worst-case nodes evaluated for one snapshot: every rule, every clause, lets inlined."""
        return sum(r.cost for r in self.rules)

    def rule_infos(self) -> tuple[RuleInfo, ...]:
        """Per rule, what an `Outcome` needs without evaluating: id, veto, constant factors, place."""
        return tuple(
            RuleInfo(
                r.rule_id,
                r.skip,
                str(r.rule.span),
                tuple((t, float(c)) for t, e in r.scales if (c := constant_number(e)) is not None),
            )
            for r in self.rules
        )

    @property
    def features(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for r in self.rules:
            out |= r.features
        return out


@dataclass(frozen=True)
class _LetInfo:
    expr: n.Expr
    type: Type
    unguarded: Mapping[str, Span]
    pos: frozenset[str]
    neg: frozenset[str]
    depth: int
    nodes: int
    features: frozenset[str]


_Unguarded = dict[str, tuple[Span, str | None]]  # feature -> (where, through which let)


class _Checker:
    def __init__(
        self,
        schema: Schema,
        params: Mapping[str, Any],
        param_units: Mapping[str, str] | None = None,
        tables: Mapping[str, ParamTable] | None = None,
    ):
        self.schema = schema
        self.params = params
        self.tables = dict(tables or {})
        self.param_units = {k: parse_unit(u) for k, u in (param_units or {}).items()}
        self.feature_units = {
            name: parse_unit(spec.unit) for name, spec in schema.features.items() if spec.unit
        }
        self.diags: list[Diagnostic] = []
        self.let_defs: dict[str, n.LetDef] = {}
        self.lets: dict[str, _LetInfo] = {}
        self.used_lets: set[str] = set()
        self.context = ""

    # -- diagnostics ---------------------------------------------------------------------------

    def error(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(code, message + self.context, span, hint))

    def warn(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(code, message, span, hint, Severity.WARNING))

    def describe(self, e: n.Expr, t: Type) -> str:
        text = to_source(e)
        if len(text) > 40:
            text = text[:37] + "..."
        return f"{text} ({t})"

    def describe_unit(self, e: n.Expr, t: Type) -> str:
        text = to_source(e)
        if len(text) > 40:
            text = text[:37] + "..."
        shown = "no unit" if t.unit.kind == "unknown" else str(t.unit)
        return f"{text} ({shown})"

    # -- units -----------------------------------------------------------------------------------

    def same_units(
        self, what: str, parts: list[tuple[n.Expr, Type]], span: Span | None = None
    ) -> Unit:
        """The one unit of values that must agree (E218 naming both sides when they do not)."""
        units = [t.unit for _, t in parts]
        mismatch = first_mismatch(units)
        if mismatch is None:
            return unify(units) or UNKNOWN
        (a, at), (b, bt) = parts[mismatch[0]], parts[mismatch[1]]
        self.error(
            "E218",
            f"{what} {self.describe_unit(a, at)} and {self.describe_unit(b, bt)}: the units differ",
            span or _join(a.span, b.span),
            conversion_hint(at.unit, _short(a), bt.unit, _short(b)),
        )
        return UNKNOWN

    def need_pure(self, what: str, e: n.Expr, t: Type, hint: str) -> None:
        """E219 unless ``e`` is a pure number (a ratio at scale 1: fraction, or unit-less)."""
        if t.unit.checked and not t.unit.same(ONE):
            self.error(
                "E219",
                f"{what} must be a pure number, found {self.describe_unit(e, t)}",
                e.span,
                hint,
            )

    def pure_hint(self, t: Type) -> str:
        if t.unit.dimensionless:
            return "convert it with to_fraction(...)"
        return f"divide it by a reference value in {t.unit} (a param declared with that unit)"

    # -- facts for has() guards ------------------------------------------------------------------

    def pos(self, e: n.Expr) -> frozenset[str]:
        """Features known present when ``e`` is true."""
        match e:
            case n.Call(func="has", args=(n.FeatureRef(name=name),)):
                return frozenset({name})
            case n.BoolOp(op="and", operands=ops):
                return frozenset().union(*(self.pos(o) for o in ops))
            case n.BoolOp(op="or", operands=ops):
                return frozenset.intersection(*(self.pos(o) for o in ops))
            case n.Not(operand=o):
                return self.neg(o)
            case n.LetRef(name=name) if name in self.lets:
                return self.lets[name].pos
        return frozenset()

    def neg(self, e: n.Expr) -> frozenset[str]:
        """Features known present when ``e`` is false."""
        match e:
            case n.BoolOp(op="or", operands=ops):
                return frozenset().union(*(self.neg(o) for o in ops))
            case n.BoolOp(op="and", operands=ops):
                return frozenset.intersection(*(self.neg(o) for o in ops))
            case n.Not(operand=o):
                return self.pos(o)
            case n.LetRef(name=name) if name in self.lets:
                return self.lets[name].neg
        return frozenset()

    # -- expressions -----------------------------------------------------------------------------

    def expr(self, e: n.Expr, facts: frozenset[str]) -> tuple[n.Expr, Type, _Unguarded]:
        match e:
            case n.Number(value=v):
                return e, (INT if isinstance(v, int) else NUMBER).with_unit(LITERAL), {}
            case n.String():
                return e, STRING, {}
            case n.Bool():
                return e, BOOL, {}
            case n.Name():
                return self.name(e, facts)
            case n.ListLit():
                self.error("E217", "a list can only follow 'in'", e.span)
                return e, ERROR, {}
            case n.Neg(operand=o):
                o2, t, ug = self.expr(o, facts)
                if not t.is_numeric:
                    self.error(
                        "E205",
                        f"cannot negate {self.describe(o2, t)}",
                        e.span,
                        "'-' applies to numbers",
                    )
                    t = ERROR
                return n.Neg(o2, e.span), t, ug  # a unit passes through
            case n.Not(operand=o):
                o2, t, ug = self.expr(o, facts)
                self.need_bool(o2, t, "'not'")
                return n.Not(o2, e.span), BOOL, ug
            case n.BinOp():
                return self.binop(e, facts)
            case n.BoolOp(op=op, operands=ops):
                out, ug_all, known = [], {}, facts
                for o in ops:
                    o2, t, ug = self.expr(o, known)
                    self.need_bool(o2, t, f"'{op}'")
                    out.append(o2)
                    ug_all.update(ug)
                    known = known | (self.pos(o2) if op == "and" else self.neg(o2))
                return n.BoolOp(op, tuple(out), e.span), BOOL, ug_all
            case n.Compare():
                return self.compare(e, facts)
            case n.Member():
                return self.member(e, facts)
            case n.Call():
                return self.call(e, facts)
            case n.Index():
                return self.index(e, facts)
        raise TypeError(f"unexpected node {e!r}")

    def index(self, e: n.Index, facts: frozenset[str]) -> tuple[n.Expr, Type, _Unguarded]:
        """``table[key]``: a param table looked up by a value of the enum it is keyed by."""
        key, kt, ug = self.expr(e.key, facts)
        table = self.tables.get(e.name)
        if table is None:
            what = (
                f"param {e.name} is a {_param_kind(self.params[e.name])}"
                if e.name in self.params and not isinstance(self.params[e.name], list)
                else f"param {e.name} is a list"
                if e.name in self.params
                else f"'{e.name}' is not a param"
            )
            self.error(
                "E105",
                f"indexing with '[' works on param tables only; {what}",
                e.span,
                did_you_mean(e.name, self.tables)
                or 'declare a table: name = { by = "symbol", values = { BTCUSDT = 1.0, ... } }',
            )
            return e, ERROR, ug
        if kt.kind == "error":
            return e, ERROR, ug
        keys = tuple(k for k, _ in table.entries)
        if kt.kind != "enum":
            self.error(
                "E221",
                f"{e.name} is keyed by the enum {table.by}, found {self.describe(key, kt)}",
                key.span,
                f"write {e.name}[{table.by}]",
            )
            return e, ERROR, ug
        missing = [v for v in kt.values if v not in keys]
        if missing:
            self.error(
                "E221",
                f"{e.name} has no entry for {', '.join(map(repr, missing))}: "
                f"{'a value' if len(missing) == 1 else 'values'} of {to_source(key)} "
                f"(enum: {', '.join(kt.values)})",
                key.span,
                f"{e.name} is keyed by {table.by}; add the entries in bundle.toml",
            )
            return e, ERROR, ug
        order = [k for k in kt.values]  # the key's own values, in the enum's order
        values = tuple(dict(table.entries)[k] for k in order)
        t = (INT if all(type(v) is int for v in values) else NUMBER).with_unit(
            parse_unit(table.unit) if table.unit else UNKNOWN
        )
        return n.Lookup(e.name, key, tuple(order), values, e.span), t, ug

    def need_bool(self, e: n.Expr, t: Type, what: str) -> None:
        if t.kind not in ("bool", "error"):
            self.error(
                "E214",
                f"{what} needs true/false operands, found {self.describe(e, t)}",
                e.span,
                "compare the value, e.g. x > 0",
            )

    def name(self, e: n.Name, facts: frozenset[str]) -> tuple[n.Expr, Type, _Unguarded]:
        name = e.name
        spec = self.schema.features.get(name)
        if spec is not None:
            ref = n.FeatureRef(name, spec.optional, e.span)
            ug: _Unguarded = {name: (e.span, None)} if spec.optional and name not in facts else {}
            t = feature_type(spec).with_unit(self.feature_units.get(name, UNKNOWN))
            return ref, t, ug
        if name in self.let_defs:
            self.used_lets.add(name)
            info = self.lets.get(name)
            if info is None:  # part of a cycle, already reported
                return n.LetRef(name, e.span), ERROR, {}
            ug = {f: (e.span, name) for f in info.unguarded if f not in facts}
            return n.LetRef(name, e.span), info.type, ug
        if name in self.params:
            lit, t, ug = param_literal(self.params[name], e.span, name)
            return lit, t.with_unit(self.param_units.get(name, UNKNOWN)), ug
        if name in FUNCTIONS:
            self.error(
                "E201",
                f"'{name}' is a function and needs arguments",
                e.span,
                f"call it as {name}(...)",
            )
            return e, ERROR, {}
        if name in OUTPUTS:
            self.error(
                "E201",
                f"'{name}' is an output, not a value a condition can read",
                e.span,
                f"outputs are set in 'then', e.g. {name} *= 1.2",
            )
            return e, ERROR, {}
        if name in self.tables:
            by = self.tables[name].by
            self.error(
                "E221",
                f"{name} is a param table keyed by {by}: it is read with a key",
                e.span,
                f"write {name}[{by}]",
            )
            return e, ERROR, {}
        known = [*self.schema.features, *self.let_defs, *self.params, *self.tables]
        self.error(
            "E201",
            f"unknown name '{name}'",
            e.span,
            did_you_mean(name, known)
            or "declare it in bundle.toml [features] or [params], or with 'let'",
        )
        return e, ERROR, {}

    def binop(self, e: n.BinOp, facts: frozenset[str]) -> tuple[n.Expr, Type, _Unguarded]:
        left, lt, lug = self.expr(e.left, facts)
        right, rt, rug = self.expr(e.right, facts)
        t: Type = INT if lt == INT and rt == INT and e.op != "/" else NUMBER
        for side, st in ((left, lt), (right, rt)):
            if not st.is_numeric:
                self.error(
                    "E205",
                    f"cannot apply '{e.op}' to {self.describe(side, st)}",
                    side.span,
                    "arithmetic applies to numbers",
                )
                t = ERROR
        if t != ERROR:
            if e.op in ("+", "-"):
                verb = "cannot add" if e.op == "+" else "cannot subtract"
                unit = self.same_units(verb, [(left, lt), (right, rt)], e.span)
            else:
                unit = lt.unit * rt.unit if e.op == "*" else lt.unit / rt.unit
            t = t.with_unit(unit)
        return n.BinOp(e.op, left, right, e.span), t, {**lug, **rug}

    def compare(self, e: n.Compare, facts: frozenset[str]) -> tuple[n.Expr, Type, _Unguarded]:
        checked = [self.expr(o, facts) for o in e.operands]
        ug: _Unguarded = {}
        for _, _, u in checked:
            ug.update(u)
        for op, (a, at, _), (b, bt, _) in zip(e.ops, checked, checked[1:], strict=False):
            self.compare_pair(op, a, at, b, bt)
        return n.Compare(tuple(c[0] for c in checked), e.ops, e.span), BOOL, ug

    def compare_pair(
        self, op: str, a: n.Expr, at: Type, b: n.Expr, bt: Type, span: Span | None = None
    ) -> None:
        """Check ``a op b``; ``span`` overrides where a mismatch is reported (a list item)."""
        if ERROR in (at, bt):
            return
        where = span or _join(a.span, b.span)
        ordering = op in ("<", "<=", ">", ">=")
        ok = (at.is_numeric and bt.is_numeric) or (
            not ordering and ((at.is_stringy and bt.is_stringy) or (at == BOOL and bt == BOOL))
        )
        if not ok:
            hint = (
                "only numbers can be ordered"
                if ordering and at.is_stringy and bt.is_stringy
                else _mixed_compare_hint(a, at, b, bt)
            )
            self.error(
                "E204",
                f"cannot compare {self.describe(a, at)} with {self.describe(b, bt)}",
                where,
                hint,
            )
            return
        if at.is_numeric and bt.is_numeric:
            self.same_units("cannot compare", [(a, at), (b, bt)], where)
        for x, xt, y in ((a, at, b), (b, bt, a)):
            if xt.kind == "enum" and isinstance(y, n.String):
                self.enum_member(x, xt, y)
        if at.kind == "enum" and bt.kind == "enum" and not set(at.values) & set(bt.values):
            self.error(
                "E204",
                f"cannot compare {self.describe(a, at)} with {self.describe(b, bt)}: "
                "the enums share no value",
                where,
            )

    def enum_member(self, x: n.Expr, xt: Type, lit: n.String) -> None:
        if lit.value not in xt.values:
            self.error(
                "E206",
                f"{quote_value(lit.value)} is not a value of {to_source(x)} "
                f"(enum: {', '.join(xt.values)})",
                lit.span,
                did_you_mean(lit.value, xt.values),
            )

    def member(self, e: n.Member, facts: frozenset[str]) -> tuple[n.Expr, Type, _Unguarded]:
        value, vt, ug = self.expr(e.value, facts)
        container = e.container
        item_unit = LITERAL
        if isinstance(container, n.Name) and container.name in self.param_units and vt.is_numeric:
            lt = NUMBER.with_unit(self.param_units[container.name])
            self.same_units("cannot compare", [(value, vt), (container, lt)], e.span)
            item_unit = UNKNOWN  # reported once for the list, not per item
        if isinstance(container, n.Name) and container.name in self.params:
            param = self.params[container.name]
            if not isinstance(param, list):
                self.error(
                    "E217",
                    f"'in' needs a list, found param {container.name} ({_param_kind(param)})",
                    container.span,
                )
                return n.Member(value, container, e.negated, e.span), BOOL, ug
            container = n.ListLit(
                tuple(param_literal(x, container.span)[0] for x in param), container.span
            )
        elif not isinstance(container, n.ListLit):
            self.error(
                "E217",
                f"'in' needs a list of literals or a list param, found {to_source(container)}",
                container.span,
                'write e.g. symbol in ["BTCUSDT", "ETHUSDT"]',
            )
            return n.Member(value, container, e.negated, e.span), BOOL, ug
        items = []
        for item in container.items:
            lit = self.literal(item)
            if lit is None:
                self.error(
                    "E217", f"list items must be literals, found {to_source(item)}", item.span
                )
                continue
            lt = (
                INT
                if isinstance(lit, n.Number) and isinstance(lit.value, int)
                else NUMBER
                if isinstance(lit, n.Number)
                else STRING
                if isinstance(lit, n.String)
                else BOOL
            )
            unit = item_unit
            if isinstance(item, n.Name):  # a scalar param in a list literal
                unit = self.param_units.get(item.name, UNKNOWN)
            self.compare_pair("==", value, vt, lit, lt.with_unit(unit), lit.span)
            items.append(lit)
        return n.Member(value, n.ListLit(tuple(items), container.span), e.negated, e.span), BOOL, ug

    def literal(self, e: n.Expr) -> n.Number | n.String | n.Bool | None:
        match e:
            case n.Number() | n.String() | n.Bool():
                return e
            case n.Neg(operand=n.Number(value=v, text=text)):
                return n.Number(-v, "-" + text, e.span)
            case n.Name(name=name) if name in self.params and not isinstance(
                self.params[name], list
            ):
                lit = param_literal(self.params[name], e.span)[0]
                assert isinstance(lit, n.Number | n.String | n.Bool)
                return lit
        return None

    def call(self, e: n.Call, facts: frozenset[str]) -> tuple[n.Expr, Type, _Unguarded]:
        if e.func not in FUNCTIONS:
            self.error(
                "E202",
                f"unknown function '{e.func}'",
                e.func_span,
                did_you_mean(e.func, FUNCTIONS)
                or "the functions are "
                + ", ".join(f for f in FUNCTIONS if f not in CONVERSIONS)
                + " and the unit conversions to_<unit>()",
            )
            for a in e.args:  # still check the arguments, for their own errors
                self.expr(a, facts)
            return e, ERROR, {}
        lo, hi = FUNCTIONS[e.func]
        if len(e.args) < lo or (hi is not None and len(e.args) > hi):
            want = f"{lo}" if lo == hi else f"at least {lo}"
            self.error(
                "E203",
                f"{e.func}() takes {want} argument{'s' if lo != 1 else ''}, found {len(e.args)}",
                e.span,
            )
            return e, ERROR, {}
        if e.func == "has":
            arg = e.args[0]
            spec = self.schema.features.get(arg.name) if isinstance(arg, n.Name) else None
            if spec is None:
                hint = (
                    did_you_mean(arg.name, self.schema.features)
                    if isinstance(arg, n.Name)
                    else None
                )
                self.error(
                    "E215",
                    f"has() takes the name of a declared feature, found {to_source(arg)}",
                    arg.span,
                    hint,
                )
                return e, ERROR, {}
            if not spec.optional:
                self.warn(
                    "W206",
                    f"has({spec.name}) is always true: '{spec.name}' is a required feature",
                    e.span,
                    "declare it optional = true in bundle.toml, or drop the guard",
                )
            return (
                n.Call(
                    "has", (n.FeatureRef(spec.name, spec.optional, arg.span),), e.span, e.func_span
                ),
                BOOL,
                {},
            )
        if e.func == "prev":
            return self.prev(e, facts)
        if e.func == "count_true":
            conds, ug = [], {}
            for a in e.args:
                a2, t, u = self.expr(a, facts)
                ug.update(u)
                self.need_bool(a2, t, "count_true()")
                conds.append(a2)
            return n.Call(e.func, tuple(conds), e.span, e.func_span), INT.with_unit(ONE), ug
        args, ug = [], {}
        typed: list[tuple[n.Expr, Type]] = []
        all_int = True
        numeric = True
        for a in e.args:
            a2, t, u = self.expr(a, facts)
            ug.update(u)
            args.append(a2)
            typed.append((a2, t))
            if not t.is_numeric:
                self.error(
                    "E205", f"{e.func}() takes numbers, found {self.describe(a2, t)}", a2.span
                )
                numeric = False
            all_int = all_int and t == INT
        call = n.Call(e.func, tuple(args), e.span, e.func_span)
        if e.func in ("crossed_above", "crossed_below"):
            if numeric:
                self.same_units(f"{e.func}() takes values of one unit, found", typed)
            left, right = args
            crossed = n.Crossed(
                e.func.removeprefix("crossed_"),
                left,
                right,
                self.shift(left, 1, e.func),
                self.shift(right, 1, e.func),
                e.span,
            )
            return crossed, BOOL, ug
        if e.func in TIME_FUNCTIONS:
            if not numeric:
                return call, ERROR, ug
            return self.time_of(e, typed[0]), INT.with_unit(TIME_FUNCTIONS[e.func]), ug
        unit = self.call_unit(e, typed) if numeric else UNKNOWN
        if e.func == "between_wrap":
            return call, BOOL, ug
        if e.func in CONVERSIONS:
            if not numeric:
                return call, ERROR, ug
            conv, t = self.convert(e, typed[0], unit)
            return conv, t, ug
        if e.func == "between":
            return call, BOOL, ug
        if e.func in ("abs", "min", "max", "clamp") and all_int:
            return call, INT.with_unit(unit), ug
        return call, NUMBER.with_unit(unit), ug

    def prev(self, e: n.Call, facts: frozenset[str]) -> tuple[n.Expr, Type, _Unguarded]:
        """``prev(x)`` / ``prev(x, k)``: ``x`` with every feature read ``k`` snapshots back."""
        arg, t, ug = self.expr(e.args[0], facts)
        lag = 1
        if len(e.args) == 2:
            k = e.args[1]
            if not (isinstance(k, n.Number) and type(k.value) is int and 1 <= k.value <= 8):
                self.error(
                    "E220",
                    f"the second argument of prev() is how many snapshots back, an integer "
                    f"literal from 1 to 8, found {to_source(k)}",
                    k.span,
                )
                return arg, ERROR, ug
            lag = k.value
        return self.shift(arg, lag, "prev"), t, ug

    def shift(self, e: n.Expr, k: int, what: str) -> n.Expr:
        """``e`` read ``k`` snapshots back: lets substituted, features at lag + k (E220 for a
        feature that does not carry that much history)."""
        missing: dict[str, int] = {}

        def go(x: n.Expr) -> n.Expr:
            match x:
                case n.FeatureRef(name=name, lag=lag):
                    spec = self.schema.features[name]
                    if spec.history < lag + k:
                        missing[name] = max(missing.get(name, 0), lag + k)
                    return replace(x, lag=lag + k)
                case n.LetRef(name=name):
                    info = self.lets.get(name)
                    return go(info.expr) if info is not None else x
                case n.Neg() | n.Not() | n.Convert():
                    return replace(x, operand=go(x.operand))
                case n.BinOp():
                    return replace(x, left=go(x.left), right=go(x.right))
                case n.BoolOp() | n.Compare():
                    return replace(x, operands=tuple(go(o) for o in x.operands))
                case n.Member():
                    return replace(x, value=go(x.value))
                case n.Lookup():
                    return replace(x, key=go(x.key))  # the key's previous value
                case n.Call(func="has"):
                    return x  # a feature and its history are present together
                case n.Call():
                    return replace(x, args=tuple(go(a) for a in x.args))
                case n.Crossed():
                    return replace(
                        x,
                        left=go(x.left),
                        right=go(x.right),
                        left_prev=go(x.left_prev),
                        right_prev=go(x.right_prev),
                    )
            return x

        out = go(e)
        for name, need in missing.items():
            have = self.schema.features[name].history
            self.error(
                "E220",
                f"{what}() reads '{name}' {need} snapshot{'s' * (need > 1)} back, but it "
                f"carries {'no history' if not have else f'history {have}'}",
                e.span,
                f"declare history = {need} on feature {name} in bundle.toml "
                f"(the snapshot then carries {history_key(name, 1)!r}"
                + (f" ... {history_key(name, need)!r})" if need > 1 else ")"),
            )
        return out

    def time_of(self, e: n.Call, arg: tuple[n.Expr, Type]) -> n.Expr:
        """``hour_utc(ts)`` and friends: ``ts`` must be a timestamp in ms or s (E219); one in
        seconds is converted to ms, which the helpers take."""
        a, t = arg
        ms, s = parse_unit("ms"), parse_unit("s")
        if not (t.unit.checked and (t.unit.same(ms) or t.unit.same(s))):
            found = {"unknown": "no unit", "literal": "a literal"}.get(t.unit.kind, str(t.unit))
            self.error(
                "E219",
                f"{e.func}() takes a timestamp in ms or s since the Unix epoch, found "
                f"{_short(a)} ({found})",
                a.span,
                'declare the timestamp feature with unit = "ms" (or "s")',
            )
            return n.Call(e.func, (a,), e.span, e.func_span)
        if t.unit.same(s):
            a = n.Convert("to_ms", a, 1000.0, 1.0, a.span)
        return n.Call(e.func, (a,), e.span, e.func_span)

    def call_unit(self, e: n.Call, typed: list[tuple[n.Expr, Type]]) -> Unit:
        """The unit of a numeric function's result; E218/E219 when its arguments do not fit."""
        func = e.func
        if func in ("min", "max", "clamp", "between", "between_wrap"):
            return self.same_units(f"{func}() takes values of one unit, found", typed)
        if func == "log":
            self.need_pure("the argument of log()", *typed[0], self.pure_hint(typed[0][1]))
            return typed[0][1].unit if not typed[0][1].unit.checked else ONE
        if func == "sqrt":
            u = typed[0][1].unit
            return u.power(Fraction(1, 2)) if u.checked else u
        if func in CONVERSIONS:
            return typed[0][1].unit
        return typed[0][1].unit  # abs

    def convert(self, e: n.Call, arg: tuple[n.Expr, Type], unit: Unit) -> tuple[n.Expr, Type]:
        """``to_bps(x)``: a `Convert` node scaling ``x`` into the target unit (E219 if it cannot)."""
        target = CONVERSIONS[e.func]
        a, t = arg
        target_unit = parse_unit(target)
        if not unit.checked:
            what = "a number literal" if unit.kind == "literal" else "a value with no unit"
            self.error(
                "E219",
                f"{e.func}() converts a value with a unit, found {what}: "
                f"{self.describe_unit(a, t)}",
                a.span,
                "declare the unit of the feature or param in bundle.toml"
                if unit.kind == "unknown"
                else "a literal takes the unit of what it is compared with: drop the conversion",
            )
            return n.Convert(e.func, a, span=e.span), NUMBER.with_unit(target_unit)
        if not unit.same_dims(target_unit):
            family = [
                name for name in CONVERSIONS.values() if parse_unit(name).same_dims(target_unit)
            ]
            self.error(
                "E219",
                f"{e.func}() converts {', '.join(family)}, found {self.describe_unit(a, t)}",
                a.span,
                "a conversion changes the scale, never what is measured",
            )
            return n.Convert(e.func, a, span=e.span), NUMBER.with_unit(target_unit)
        factor = conversion(target, unit)
        mul, div = (_nice(factor), 1.0) if factor >= 1 else (1.0, _nice(1 / factor))
        return n.Convert(e.func, a, mul, div, e.span), NUMBER.with_unit(target_unit)

    # -- items ------------------------------------------------------------------------------------

    def report_unguarded(self, ug: _Unguarded) -> None:
        for feature, (span, via) in sorted(ug.items(), key=lambda kv: kv[1][0].sort_key()):
            through = f" through let '{via}'" if via else ""
            self.error(
                "E210",
                f"optional feature '{feature}' is read{through} without a has({feature}) guard",
                span,
                f"write has({feature}) and ... (or not has({feature}) or ...)",
            )

    def check_let(self, d: n.LetDef) -> None:
        self.context = f" in let {d.name}"
        expr, t, ug = self.expr(d.expr, frozenset())
        self.lets[d.name] = _LetInfo(
            expr,
            t,
            {f: s for f, (s, _) in ug.items()},
            self.pos(expr),
            self.neg(expr),
            *self.inlined_measure(expr),
            features=self.features_of(expr),
        )

    def inlined_measure(self, e: n.Expr) -> tuple[int, int]:
        """(depth, nodes) of ``e`` with every let substituted, using the lets measured so far."""
        depth_max, nodes = 0, 0
        stack: list[tuple[object, int]] = [(e, 1)]
        while stack:
            node, d = stack.pop()
            if isinstance(node, n.LetRef) and node.name in self.lets:
                info = self.lets[node.name]
                depth_max, nodes = max(depth_max, d - 1 + info.depth), nodes + info.nodes
                continue
            depth_max, nodes = max(depth_max, d), nodes + n.cost(node)
            stack.extend((c, d + 1) for c in n.children(node))
        return depth_max, nodes

    def features_of(self, e: object) -> frozenset[str]:
        out: set[str] = set()
        stack = [e]
        while stack:
            node = stack.pop()
            if isinstance(node, n.FeatureRef):
                out.add(node.name)
            elif isinstance(node, n.LetRef) and node.name in self.lets:
                out |= self.lets[node.name].features
            stack.extend(n.children(node))
        return frozenset(out)

    def check_rule(self, r: n.Rule, index: int) -> CheckedRule:
        self.context = f" in rule {r.rule_id}"
        when, t, ug = self.expr(r.when, frozenset())
        if t.kind not in ("bool", "error"):
            self.error(
                "E214",
                f"the condition must be true or false, found {self.describe(when, t)}",
                when.span,
                "compare the value, e.g. x > 0",
            )
        self.report_unguarded(ug)
        fired_facts = self.pos(when)
        scales: list[tuple[str, n.Expr]] = []
        skip = False
        for a in r.actions:
            if isinstance(a, n.Flag):
                if a.name == "skip_entry":
                    skip = True
                else:
                    self.error(
                        "E208",
                        f"unknown action '{a.name}'",
                        a.span,
                        did_you_mean(a.name, ACTIONS) or "the actions are " + ", ".join(ACTIONS),
                    )
                continue
            if a.target not in OUTPUTS:
                hint = (
                    did_you_mean(a.target, OUTPUTS)
                    or "only " + ", ".join(OUTPUTS) + " can be scaled"
                )
                if a.target == "skip_entry":
                    hint = "skip_entry is written alone, without '*='"
                self.error("E208", f"unknown action '{a.target} *='", a.target_span, hint)
                continue
            factor, ft, fug = self.expr(a.factor, fired_facts)
            self.report_unguarded(fug)
            if not ft.is_numeric:
                self.error(
                    "E209",
                    f"the factor of {a.target} must be a number, found {self.describe(factor, ft)}",
                    factor.span,
                )
                continue
            self.need_pure(
                f"the factor of {a.target}",
                factor,
                ft,
                self.pure_hint(ft),
            )
            const = constant_number(factor)
            if const is not None and not (0 < const < float("inf")):
                self.error(
                    "E209",
                    f"the factor of {a.target} must be positive, found {to_source(factor)}",
                    factor.span,
                    "use a factor below 1 to scale down, e.g. size_mult *= 0.5",
                )
            scales.append((a.target, factor))
        if skip and len(r.actions) > 1:
            self.error(
                "E216",
                "skip_entry cannot be combined with other actions",
                r.span,
                "a vetoed entry has no size to scale; split it into two rules",
            )
        depth, nodes = self.inlined_measure(when)
        for _, f in scales:
            d2, n2 = self.inlined_measure(f)
            depth, nodes = max(depth, d2), nodes + n2
        if depth > MAX_INLINED_DEPTH or nodes > MAX_INLINED_NODES:
            self.error(
                "E109",
                f"the rule expands to {nodes} nodes {depth} levels deep once lets are substituted "
                f"(limits: {MAX_INLINED_NODES} nodes, {MAX_INLINED_DEPTH} levels)",
                r.id_span,
            )
        feats = self.features_of(when)
        for _, f in scales:
            feats |= self.features_of(f)
        return CheckedRule(r, when, tuple(scales), skip, index, feats, nodes)


TIME_FUNCTIONS: Mapping[str, Unit] = {
    "hour_utc": parse_unit("hours"),
    "minute_of_day_utc": parse_unit("minutes"),
    "weekday_utc": ONE,
}
"""The time functions and the unit of what they return."""


def _nice(x: float) -> float:
    """A conversion factor, made exact where it is an integer up to rounding (1 / 1e-4)."""
    r = round(x)
    return float(r) if r and abs(x - r) <= 1e-9 * abs(x) else x


def _short(e: n.Expr) -> str:
    text = to_source(e)
    return text if len(text) <= 40 else text[:37] + "..."


def feature_type(spec: FeatureSpec) -> Type:
    if spec.type == "enum":
        return Type("enum", spec.values)
    return {"number": NUMBER, "int": INT, "string": STRING, "bool": BOOL}[spec.type]


def quote_value(value: str) -> str:
    return '"' + value.replace('"', '\\"') + '"'


def _param_kind(value: object) -> str:
    return (
        "bool"
        if isinstance(value, bool)
        else "number"
        if isinstance(value, int | float)
        else "string"
    )


def param_literal(
    value: Any, span: Span, name: str | None = None
) -> tuple[n.Expr, Type, _Unguarded]:
    """A param's value as the literal node that replaces its name (a number keeps the name as its text)."""
    if isinstance(value, bool):
        return n.Bool(value, span), BOOL, {}
    if isinstance(value, int):
        return n.Number(value, name or str(value), span), INT, {}
    if isinstance(value, float):
        return n.Number(value, name or repr(value), span), NUMBER, {}
    if isinstance(value, str):
        return n.String(value, span), STRING, {}
    items = tuple(param_literal(x, span)[0] for x in value)
    return n.ListLit(items, span), LIST, {}


def _join(a: Span, b: Span) -> Span:
    if a.path != b.path or (b.line, b.col) < (a.line, a.col):
        return a
    return Span(a.path, a.line, a.col, b.end_line, b.end_col)


def _let_order(defs: Mapping[str, n.LetDef]) -> tuple[list[str], list[list[str]]]:
    """Lets in dependency order, and the cycles among them (each as the names around the loop)."""
    deps: dict[str, list[str]] = {}
    for name, d in defs.items():
        refs, stack = [], [d.expr]
        while stack:
            node = stack.pop()
            if isinstance(node, n.Name) and node.name in defs:
                refs.append(node.name)
            stack.extend(n.children(node))  # type: ignore[arg-type]
        deps[name] = refs
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    cycles: list[list[str]] = []
    for root in defs:
        if state.get(root):
            continue
        path: list[str] = []
        stack2: list[tuple[str, int]] = [(root, 0)]
        while stack2:
            name, i = stack2.pop()
            if i == 0:
                state[name] = 1
                path.append(name)
            if i < len(deps[name]):
                stack2.append((name, i + 1))
                dep = deps[name][i]
                if state.get(dep) == 1:
                    cycles.append([*path[path.index(dep) :], dep])
                elif not state.get(dep):
                    stack2.append((dep, 0))
            else:
                state[name] = 2
                path.pop()
                order.append(name)
    return order, cycles


def check(
    modules: tuple[n.Module, ...] | list[n.Module],
    *,
    schema: Schema,
    params: Mapping[str, Any] | None = None,
    param_units: Mapping[str, str] | None = None,
    tables: Mapping[str, ParamTable] | None = None,
    clamp: Clamp | None = None,
    texts: Mapping[str, str] | None = None,
) -> CheckedBundle:
    """Resolve and type-check every let and rule of a bundle.

    Args:
        modules: the parsed rule files, in file order.
        schema: the declared features.
        params: named constants usable in rules.
        param_units: the declared unit of each param that has one (`dsl.units`).
        tables: the params keyed by an enum feature (``name[key]`` in rules).
        clamp: output bounds (for the clamp warnings and the compiled ruleset).
        texts: source texts by path, for rendering diagnostics.

    Returns:
        The checked bundle, rules in evaluation order, with its warnings.

    Raises:
        DslError: with every error (and warning) found, when there is at least one error.
    """
    from dsl.lints import lint_bundle  # lints read CheckedRule; imported here to keep one direction

    c = _Checker(schema, params or {}, param_units, tables)
    clamp = clamp or Clamp()
    for m in modules:
        for item in m.items:
            if isinstance(item, n.LetDef):
                if item.name in c.let_defs:
                    first = c.let_defs[item.name]
                    c.error(
                        "E212",
                        f"let '{item.name}' is defined twice",
                        item.name_span,
                        f"first defined at {first.name_span}",
                    )
                    continue
                if (
                    item.name in schema.features
                    or item.name in c.params
                    or item.name in c.tables
                    or item.name in FUNCTIONS
                    or item.name in ACTIONS
                ):
                    kind = (
                        "feature"
                        if item.name in schema.features
                        else "param"
                        if item.name in c.params or item.name in c.tables
                        else "function"
                        if item.name in FUNCTIONS
                        else "action"
                    )
                    c.error(
                        "E213",
                        f"let '{item.name}' has the name of {'an' if kind == 'action' else 'a'} {kind}",
                        item.name_span,
                        "choose another name",
                    )
                    continue
                c.let_defs[item.name] = item
    order, cycles = _let_order(c.let_defs)
    in_cycle = {name for cyc in cycles for name in cyc}
    for cyc in cycles:
        d = c.let_defs[cyc[0]]
        loop = " -> ".join(cyc)
        c.error(
            "E211",
            f"let '{cyc[0]}' refers to itself ({loop})",
            d.name_span,
            "lets cannot be recursive",
        )
    for name in order:
        if name not in in_cycle:
            c.check_let(c.let_defs[name])
            info = c.lets[name]
            if info.depth > MAX_INLINED_DEPTH or info.nodes > MAX_INLINED_NODES:
                c.error(
                    "E109",
                    f"let '{name}' expands to {info.nodes} nodes {info.depth} levels deep "
                    f"(limits: {MAX_INLINED_NODES} nodes, {MAX_INLINED_DEPTH} levels)",
                    c.let_defs[name].name_span,
                )
    rules: list[tuple[int, int, CheckedRule]] = []
    seen: dict[str, n.Rule] = {}
    position = 0
    for m in modules:
        for item in m.items:
            if not isinstance(item, n.Rule):
                continue
            if item.rule_id in seen:
                c.context = ""
                c.error(
                    "E207",
                    f"rule id '{item.rule_id}' is used twice",
                    item.id_span,
                    f"first used at {seen[item.rule_id].id_span}",
                )
            seen.setdefault(item.rule_id, item)
            rules.append((-item.priority, position, c.check_rule(item, position)))
            position += 1
    c.context = ""
    ordered = [r for _, _, r in sorted(rules, key=lambda t: (t[0], t[1]))]
    ordered = [
        CheckedRule(r.rule, r.when, r.scales, r.skip, i, r.features, r.cost)
        for i, r in enumerate(ordered)
    ]
    for name, d in c.let_defs.items():
        if name not in c.used_lets and name not in in_cycle:
            c.warn("W207", f"let '{name}' is never used", d.name_span)
    lets = {name: info.expr for name, info in c.lets.items()}
    if not any(d.is_error for d in c.diags):
        c.diags.extend(lint_bundle(ordered, lets, clamp))
    diags = sort_and_cap(c.diags)
    if any(d.is_error for d in diags):
        raise DslError(diags, texts=texts)
    return CheckedBundle(tuple(ordered), lets, schema, clamp, tuple(diags), dict(texts or {}))


def _mixed_compare_hint(a: n.Expr, at: Type, b: n.Expr, bt: Type) -> str | None:
    """E204's hint for a number compared with a string: the likely fix."""
    for x, xt, y, yt in ((a, at, b, bt), (b, bt, a, at)):
        if not (xt.is_numeric and yt.is_stringy):
            continue
        if isinstance(y, n.String):
            try:
                float(y.value)
            except ValueError:
                return f"{to_source(x)} is a number: compare it with a number, not a string"
            return f"write the number without quotes: {y.value}"
        if yt.kind == "enum":
            shown = ", ".join(quote_value(v) for v in yt.values)
            return f"{to_source(y)} is an enum: compare it with one of its values ({shown})"
        if isinstance(x, n.Number):
            return f"{to_source(y)} is a string: compare it with a string, in quotes"
        return f"{to_source(y)} is a string and {to_source(x)} a number: they never compare equal"
    return None
