"""Units of measure: the algebra the checker uses to refuse `spread_bps > funding_next`.

A unit is a product of named atoms with (possibly fractional) exponents, e.g. ``bps*USDT/base``.
For comparison every atom reduces to a scale and base dimensions (`bps` is 1e-4 of a pure
number, `ms` is 1e-3 of `s`), so `fraction` and `1` are the same unit while `bps` and `fraction`
are the same dimension at different scales: convertible with `to_bps`/`to_fraction`, never mixed.

Two values have no unit of their own: a number literal (`LITERAL`: it takes the unit of what it
is added to or compared with, and is a plain scalar in `*` and `/`), and a feature or param
declared without a unit (`UNKNOWN`: unchecked, it absorbs every unit, so unit-less bundles keep
working). Everything here runs at build time; nothing of it reaches generated code.
Imports nothing outside the standard library.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

Dims = tuple[tuple[str, Fraction], ...]

# name -> (scale, base dimensions). Order matters: the first atom of a scale and dimension is
# the one a hint suggests converting to.
ATOMS: dict[str, tuple[float, Dims]] = {
    "fraction": (1.0, ()),
    "percent": (1e-2, ()),
    "bps": (1e-4, ()),
    "USDT": (1.0, (("USDT", Fraction(1)),)),
    "base": (1.0, (("base", Fraction(1)),)),
    "count": (1.0, (("count", Fraction(1)),)),
    "s": (1.0, (("s", Fraction(1)),)),
    "ms": (1e-3, (("s", Fraction(1)),)),
    "minutes": (60.0, (("s", Fraction(1)),)),
    "hours": (3600.0, (("s", Fraction(1)),)),
    "per_8h": (1 / 28800, (("s", Fraction(-1)),)),
    "per_hour": (1 / 3600, (("s", Fraction(-1)),)),
}
"""The unit atoms a bundle may name (`unit = "USDT/base"` combines them with `*` and `/`)."""
DIMENSIONLESS_NAMES = ("1", "dimensionless")
"""Spellings of the pure number, the same unit as `fraction`."""
CONVERSIONS: dict[str, str] = {
    f"to_{name}": name
    for name in (
        "fraction",
        "percent",
        "bps",
        "ms",
        "s",
        "minutes",
        "hours",
        "per_8h",
        "per_hour",
    )
}
"""Conversion function -> the atom it converts to (from any unit of the same dimension)."""
TIMESTAMP_UNITS = ("ms", "s")
"""Units a timestamp (since the Unix epoch, UTC) may be declared in, for hour_utc() and friends."""


@dataclass(frozen=True, slots=True)
class Unit:
    """A product of named atoms; `LITERAL` and `UNKNOWN` are the two unit-less kinds."""

    named: tuple[tuple[str, Fraction], ...] = ()
    kind: str = "unit"  # unit | literal | unknown

    @property
    def checked(self) -> bool:
        return self.kind == "unit"

    def norm(self) -> tuple[float, Dims]:
        scale = 1.0
        dims: dict[str, Fraction] = {}
        for name, exp in self.named:
            s, ds = ATOMS[name]
            scale *= s ** float(exp)
            for d, e in ds:
                dims[d] = dims.get(d, Fraction(0)) + e * exp
        return scale, tuple(sorted((d, e) for d, e in dims.items() if e != 0))

    def same(self, other: Unit) -> bool:
        (s1, d1), (s2, d2) = self.norm(), other.norm()
        return d1 == d2 and math.isclose(s1, s2, rel_tol=1e-9)

    def same_dims(self, other: Unit) -> bool:
        return self.norm()[1] == other.norm()[1]

    @property
    def dimensionless(self) -> bool:
        return self.norm()[1] == ()

    def __mul__(self, other: Unit) -> Unit:
        return _combine(self, other, 1)

    def __truediv__(self, other: Unit) -> Unit:
        return _combine(self, other, -1)

    def power(self, p: Fraction) -> Unit:
        return _make({n: e * p for n, e in self.named})

    def __str__(self) -> str:
        if self.kind != "unit":
            return self.kind
        if not self.named:
            return "1"
        atom = self.atom()
        if atom is not None and len(self.named) > 1:
            return atom  # e.g. bps*USDT/USDT reads as bps
        num = [_show(n, e) for n, e in self.named if e > 0]
        den = [_show(n, -e) for n, e in self.named if e < 0]
        text = "*".join(num) or "1"
        return text + "".join("/" + d for d in den)

    def atom(self) -> str | None:
        """The name of the atom this unit equals (``fraction`` for a pure number), if any."""
        for name in ATOMS:
            if self.same(Unit(((name, Fraction(1)),))):
                return name
        return None


LITERAL = Unit(kind="literal")
UNKNOWN = Unit(kind="unknown")
ONE = Unit()


def _show(name: str, exp: Fraction) -> str:
    if exp == 1:
        return name
    return f"{name}^{exp}" if exp.denominator == 1 else f"{name}^({exp})"


def _make(named: dict[str, Fraction]) -> Unit:
    return Unit(tuple(sorted((n, e) for n, e in named.items() if e != 0)))


def _combine(a: Unit, b: Unit, sign: int) -> Unit:
    if UNKNOWN in (a, b):
        return UNKNOWN
    if a.kind == "literal" and b.kind == "literal":
        return LITERAL
    if b.kind == "literal":
        return a
    if a.kind == "literal":
        return b if sign == 1 else b.power(Fraction(-1))
    named = dict(a.named)
    for n, e in b.named:
        named[n] = named.get(n, Fraction(0)) + sign * e
    return _make(named)


_TOKEN = re.compile(r"\s*([*/])?\s*([A-Za-z0-9_]+)\s*")


def parse_unit(text: str) -> Unit:
    """A declared unit: atoms joined by ``*`` and ``/`` (``USDT/base``), or ``1``.

    Raises:
        ValueError: with the names that are not atoms, and the atoms there are.
    """
    named: dict[str, Fraction] = {}
    pos = 0
    first = True
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or (first and m.group(1)) or (not first and not m.group(1)):
            raise ValueError(f"unit '{text}' is not atoms joined by '*' and '/'")
        name = m.group(2)
        sign = -1 if m.group(1) == "/" else 1
        if name in DIMENSIONLESS_NAMES:
            pass
        elif name in ATOMS:
            named[name] = named.get(name, Fraction(0)) + sign
        else:
            raise ValueError(
                f"unknown unit '{name}'; the units are {', '.join(ATOMS)} and 1 "
                "(combined with '*' and '/', e.g. 'USDT/base')"
            )
        pos = m.end()
        first = False
    if first:
        raise ValueError("a unit cannot be empty; leave 'unit' out for a unit-less value")
    return _make(named)


def unify(units: list[Unit]) -> Unit | None:
    """The one unit of values that are added, compared or passed to min/max/clamp/between;
    None when two checked units differ."""
    found: Unit | None = None
    unknown = False
    for u in units:
        if u.kind == "unknown":
            unknown = True
        elif u.kind == "unit":
            if found is None:
                found = u
            elif not found.same(u):
                return None
    if unknown:
        return UNKNOWN
    return found if found is not None else LITERAL


def first_mismatch(units: list[Unit]) -> tuple[int, int] | None:
    """The positions of the first two checked units that differ."""
    first = None
    for i, u in enumerate(units):
        if u.kind != "unit":
            continue
        if first is None:
            first = i
        elif not units[first].same(u):
            return first, i
    return None


def conversion_hint(a: Unit, a_text: str, b: Unit, b_text: str) -> str:
    """How to make ``a`` and ``b`` agree: the conversion call, or why there is none."""
    if not a.same_dims(b):
        return f"{a} and {b} measure different things: compare like with like"
    for target, other_text, other in ((a, b_text, b), (b, a_text, a)):
        atom = target.atom()
        if atom is not None and f"to_{atom}" in CONVERSIONS and other.atom() is not None:
            return f"convert with to_{atom}({other_text})"
    ratio = a.norm()[0] / b.norm()[0]
    return (
        f"{a} is not {b} (a factor of {ratio:g} apart): convert a part in bps or percent "
        "with to_fraction(...)"
    )


def conversion(target: str, source: Unit) -> float:
    """The factor that converts a value in ``source`` to the atom ``target`` (same dimension)."""
    s_scale, _ = source.norm()
    t_scale, _ = ATOMS[target]
    return s_scale / t_scale
