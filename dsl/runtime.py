"""What evaluation produces, and the only helpers generated code may call.

Faults (division by zero, log of a non-positive number, a bad factor, a missing feature) are
exceptions inside a rule; the evaluator records them and the rule does not fire. Nothing here
imports the rest of the project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from dsl.guard import SandboxViolation
from dsl.schema import Clamp, show

INF = math.inf


class RuleFault(Exception):
    """A fault the language defines (E4xx): raised by helpers, recorded by the evaluator."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def log(x: float) -> float:
    if x <= 0:
        raise RuleFault("E402", f"log of a non-positive number ({show(x)})")
    return math.log(x)


def sqrt(x: float) -> float:
    if x < 0:
        raise RuleFault("E403", f"sqrt of a negative number ({show(x)})")
    return math.sqrt(x)


def clamp(x: float, lo: float, hi: float) -> float:
    if lo > hi:
        raise RuleFault("E408", f"clamp bounds are inverted ({show(lo)} > {show(hi)})")
    return min(max(x, lo), hi)


def between(x: float, lo: float, hi: float) -> bool:
    return lo <= x <= hi


MS_PER_MINUTE = 60_000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000


def hour_utc(ms: float) -> int:
    """The hour of the day (0 to 23, UTC) of a timestamp in milliseconds since the epoch."""
    return int(ms // MS_PER_HOUR) % 24


def minute_of_day_utc(ms: float) -> int:
    """The minute of the day (0 to 1439, UTC): 22:30 is 1350."""
    return int(ms // MS_PER_MINUTE) % 1440


def weekday_utc(ms: float) -> int:
    """The day of the week (0 = Monday to 6 = Sunday, UTC); 1970-01-01 was a Thursday."""
    return (int(ms // MS_PER_DAY) + 3) % 7


def between_wrap(x: float, lo: float, hi: float) -> bool:
    """``lo <= x <= hi``, or, when ``lo > hi``, the range that wraps: ``x >= lo or x <= hi``
    (22:00 to 02:00 is ``between_wrap(hour_utc(ts), 22, 2)``)."""
    return lo <= x <= hi if lo <= hi else (x >= lo or x <= hi)


def crossed_above(a: float, b: float, a_prev: float, b_prev: float) -> bool:
    """``a`` is above ``b`` now and was not one snapshot back (qtpylib's ``crossed_above``)."""
    return a > b and a_prev <= b_prev


def crossed_below(a: float, b: float, a_prev: float, b_prev: float) -> bool:
    return a < b and a_prev >= b_prev


def factor(target: str, value: float) -> float:
    """A dynamic factor as a float; a factor that is not positive and finite is a fault (E405)."""
    try:
        v = float(value)
    except OverflowError:
        raise RuleFault("E405", f"factor of {target} is too large ({show(value)})") from None
    if not 0.0 < v < INF:
        raise RuleFault("E405", f"factor of {target} must be positive and finite, found {v!r}")
    return v


HELPERS: dict[str, object] = {
    "_abs": abs,
    "_min": min,
    "_max": max,
    "_clamp": clamp,
    "_log": log,
    "_sqrt": sqrt,
    "_between": between,
    "_between_wrap": between_wrap,
    "_hour_utc": hour_utc,
    "_minute_of_day_utc": minute_of_day_utc,
    "_weekday_utc": weekday_utc,
    "_crossed_above": crossed_above,
    "_crossed_below": crossed_below,
    "_factor": factor,
}
"""The whole vocabulary of generated code besides the feature snapshot ``f``."""


def fault_of(exc: BaseException) -> tuple[str, str]:
    """The (code, message) recorded for an exception raised while evaluating a rule.

    A `SandboxViolation` (the audit hook refused something generated code did) is never a
    fault: it is raised again, so the evaluation fails loudly instead of a rule not firing.
    """
    if isinstance(exc, SandboxViolation):
        raise exc
    if isinstance(exc, RuleFault):
        return exc.code, exc.message
    if isinstance(exc, ZeroDivisionError):
        return "E401", "division by zero"
    if isinstance(exc, KeyError):
        return "E404", f"feature {exc.args[0]!r} is missing"
    if isinstance(exc, OverflowError):
        return "E406", "numeric overflow"
    if isinstance(exc, TypeError):
        return "E407", f"a value of the wrong type: {exc}"
    return "E499", f"unexpected {type(exc).__name__}: {exc}"


class Fault(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rule_id: str
    code: str
    message: str
    where: str


class TraceStep(msgspec.Struct, frozen=True):
    """One clause of one rule: its text, where it is, its value, or ``evaluated=False``."""

    rule_id: str
    depth: int
    text: str
    where: str
    evaluated: bool
    value: bool | int | float | str | None = None
    fault: str | None = None
    """On the clause whose own operation faulted (its operands evaluated): the fault's code and
    message. Its enclosing clauses are not evaluated."""


class Outcome(msgspec.Struct, frozen=True):
    """The L1 result of a bundle on one feature snapshot (spec §2 L1)."""

    revision: int
    fired: tuple[str, ...]
    factors: dict[str, dict[str, float]]
    raw: dict[str, float]
    clamped: dict[str, float]
    veto: str | None
    vetoes: tuple[str, ...]
    faults: tuple[Fault, ...]
    trace: tuple[TraceStep, ...] | None = None

    @property
    def size_mult(self) -> float:
        return self.clamped["size_mult"]

    @property
    def tp_mult(self) -> float:
        return self.clamped["tp_mult"]

    @property
    def sl_mult(self) -> float:
        return self.clamped["sl_mult"]


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What the outcome needs to know of a rule without evaluating it."""

    rule_id: str
    skip: bool
    where: str
    constant_factors: tuple[tuple[str, float], ...]
    factor_table: dict[str, float] = field(init=False, repr=False, compare=False)
    """The constant factors per output (a repeated output's multiplied in order), copied into
    every outcome that the rule fires in; its dynamic factors are multiplied into the copy."""

    def __post_init__(self) -> None:
        table: dict[str, float] = {}
        for target, value in self.constant_factors:
            table[target] = table.get(target, 1.0) * value
        object.__setattr__(self, "factor_table", table)


Raw = tuple[
    list[int], list[tuple[int, BaseException]], list[tuple[int, str, float]], float, float, float
]
"""What an evaluator returns: fired indexes, faults, dynamic factors, and the three products."""


def build_outcome(
    raw: Raw,
    rules: Sequence[RuleInfo],
    clamp_bounds: Clamp,
    revision: int,
    trace: tuple[TraceStep, ...] | None = None,
) -> Outcome:
    fired, faults, dyn, sm, tm, lm = raw
    factors: dict[str, dict[str, float]] = {}
    ids: list[str] = []
    vetoes: list[str] = []
    for i in fired:
        info = rules[i]
        factors[info.rule_id] = info.factor_table.copy()
        ids.append(info.rule_id)
        if info.skip:
            vetoes.append(info.rule_id)
    for i, target, value in dyn:
        per = factors[rules[i].rule_id]
        per[target] = per.get(target, 1.0) * value
    sb, tb, lb = clamp_bounds.size_mult, clamp_bounds.tp_mult, clamp_bounds.sl_mult
    recorded = []
    for i, exc in faults:
        code, message = fault_of(exc)
        recorded.append(Fault(rules[i].rule_id, code, message, rules[i].where))
    return Outcome(
        revision,
        tuple(ids),
        factors,
        {"size_mult": sm, "tp_mult": tm, "sl_mult": lm},  # in `dsl.schema.OUTPUTS` order
        {
            "size_mult": min(max(sm, sb.min), sb.max),
            "tp_mult": min(max(tm, tb.min), tb.max),
            "sl_mult": min(max(lm, lb.min), lb.max),
        },
        vetoes[0] if vetoes else None,
        tuple(vetoes),
        tuple(recorded),
        trace,
    )
