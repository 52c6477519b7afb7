"""The feature schema and the output clamps a bundle declares, and snapshot validation against them.

Pure data; imports nothing outside `dsl`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from dsl.suggest import did_you_mean


def show(value: object) -> str:
    """A value for a message: huge integers are described, never printed in full."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return repr(value)


MAX_EXACT_INT = 2**53
"""Largest integer a feature may carry: numbers are evaluated as floats, which hold it exactly, so
no rule can build ever larger integers and the cost bound stays a time bound."""

OUTPUTS = ("size_mult", "tp_mult", "sl_mult")
"""The outputs a rule may scale (spec §2 L1), in the order they are reported."""

FEATURE_TYPES = ("number", "int", "string", "bool", "enum")
MAX_HISTORY = 8
"""Most previous values a feature may carry (``history = N``)."""


def history_key(name: str, lag: int) -> str:
    """The snapshot key of a feature's value ``lag`` snapshots back: ``x``, ``x_prev``,
    ``x_prev2``, ..."""
    if lag == 0:
        return name
    return f"{name}_prev" if lag == 1 else f"{name}_prev{lag}"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One declared feature: its type, whether it may be absent, and the members of an enum."""

    name: str
    type: str
    optional: bool = False
    values: tuple[str, ...] = ()
    doc: str = ""
    unit: str = ""
    """The declared unit (`dsl.units`), empty for none."""
    history: int = 0
    """How many previous values the snapshot carries (`history_key`), for prev() and crossings."""

    def describe(self) -> str:
        if self.type == "enum":
            return "enum: " + ", ".join(self.values)
        return self.type


@dataclass(frozen=True, slots=True)
class ParamTable:
    """A number param keyed by the values of an enum feature: ``tick[symbol]`` in a rule."""

    by: str
    entries: tuple[tuple[str, int | float], ...]
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Bounds:
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class Clamp:
    """Bounds applied to the product of the fired rules' factors, per output."""

    size_mult: Bounds = Bounds(0.25, 2.0)
    tp_mult: Bounds = Bounds(0.5, 2.0)
    sl_mult: Bounds = Bounds(0.5, 2.0)

    def bounds(self, output: str) -> Bounds:
        b: Bounds = getattr(self, output)
        return b


@dataclass(frozen=True, slots=True)
class SnapshotProblem:
    """Why a feature snapshot cannot be evaluated: a missing, mistyped or out-of-range value."""

    feature: str
    code: str
    message: str


@dataclass(frozen=True)
class Schema:
    features: Mapping[str, FeatureSpec] = field(default_factory=dict)

    def validate(
        self, snapshot: Mapping[str, object]
    ) -> tuple[dict[str, object], list[SnapshotProblem]]:
        """Check a snapshot against the schema.

        Returns the normalised snapshot (declared features only, ``None`` of an optional feature
        dropped, ints of number features kept as they are) and every problem found. Unknown keys are
        ignored: feature events carry more fields than a bundle reads.
        """
        out: dict[str, object] = {}
        problems: list[SnapshotProblem] = []
        for name, spec in self.features.items():
            value = snapshot.get(name)
            if value is None:
                if not spec.optional:
                    problems.append(
                        SnapshotProblem(name, "E410", f"required feature '{name}' is missing")
                    )
                continue
            t = type(value)  # the common cases first, inline: no call and no message
            if t is float and spec.type == "number" and math.isfinite(value):  # type: ignore[arg-type]
                out[name] = value
                continue
            if t is str and (
                spec.type == "string" or (spec.type == "enum" and value in spec.values)
            ):
                out[name] = value
                continue
            problem = _type_problem(spec, value)
            if problem:
                problems.append(SnapshotProblem(name, "E411", problem))
            elif spec.type in ("number", "int"):
                out[name] = float(value)  # type: ignore[arg-type]
            else:
                out[name] = value
        for spec in self.with_history:
            if spec.name not in out:
                continue  # absent (optional): its history is not read either
            for lag in range(1, spec.history + 1):
                key = history_key(spec.name, lag)
                value = snapshot.get(key)
                if value is None:
                    problems.append(
                        SnapshotProblem(
                            key,
                            "E410",
                            f"feature '{spec.name}' carries history {spec.history}: "
                            f"'{key}' is missing",
                        )
                    )
                    continue
                problem = _type_problem(FeatureSpec(key, spec.type), value)
                if problem:
                    problems.append(SnapshotProblem(key, "E411", problem))
                else:
                    out[key] = float(value)  # type: ignore[arg-type]
        return out, problems

    @cached_property
    def with_history(self) -> tuple[FeatureSpec, ...]:
        return tuple(s for s in self.features.values() if s.history)


def _type_problem(spec: FeatureSpec, value: object) -> str | None:
    if type(value) is bool and spec.type == "bool":
        return None
    shown = show(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    if spec.type in ("number", "int"):
        ok = isinstance(value, int) if spec.type == "int" else isinstance(value, int | float)
        if not ok or isinstance(value, bool):
            return f"feature '{spec.name}' must be {'an int' if spec.type == 'int' else 'a number'}, found {shown}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"feature '{spec.name}' must be finite, found {shown}"
        if isinstance(value, int) and abs(value) > MAX_EXACT_INT:
            return f"feature '{spec.name}' is out of range (|value| <= 2**53), found {show(value)}"
        return None
    if spec.type == "bool":
        return (
            None
            if isinstance(value, bool)
            else f"feature '{spec.name}' must be true or false, found {shown}"
        )
    if not isinstance(value, str):
        return f"feature '{spec.name}' must be a string, found {shown}"
    if spec.type == "enum" and value not in spec.values:
        hint = did_you_mean(value, spec.values)
        return f"feature '{spec.name}' must be one of {', '.join(spec.values)}, found {shown}" + (
            f"; {hint}" if hint else ""
        )
    return None
