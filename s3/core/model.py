"""L2, the confidence model: a built-in logistic regression and the spec's piecewise mapping.

A model is any callable from the validated feature snapshot to a `ModelResult`. Deadlines are
enforced around the call by `s3.adapters.model_runner` (the core has no clock); here a model
that raises is turned into a degraded result, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from s3.core.params import Band, ModelSpec
from s3.core.types import ModelResult

Model = Callable[[Mapping[str, Any]], ModelResult]


def logistic_p(spec: ModelSpec, features: Mapping[str, Any]) -> float:
    """p = σ(bias + Σ wᵢ·xᵢ). Raises KeyError for a missing feature, ValueError for a bad value."""
    z = spec.bias
    for name, w in spec.weights.items():
        x = features[name]
        if type(x) is float and math.isfinite(x):  # the validated snapshot's usual value
            z += w * x
            continue
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise ValueError(f"feature '{name}' is not a finite number: {x!r}")
        z += w * float(x)
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)  # the stable form for negative z (no overflow)
    return e / (1.0 + e)


class LogisticModel:
    """The built-in model of a bundle's `[model]` table."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def __call__(self, features: Mapping[str, Any]) -> ModelResult:
        try:
            return ModelResult(p=logistic_p(self.spec, features))
        except KeyError as exc:
            return ModelResult(degraded=f"model_error: feature {exc.args[0]!r} is missing")
        except (ValueError, OverflowError) as exc:
            return ModelResult(degraded=f"model_error: {exc}")


def no_model(features: Mapping[str, Any]) -> ModelResult:
    """`kind = "none"`: no L2 stage; the decision records p as absent, not degraded."""
    return ModelResult(p=None, degraded=None)


def build_model(spec: ModelSpec) -> Model:
    return LogisticModel(spec) if spec.kind == "logistic" else no_model


def map_p(p: float, bands: tuple[Band, ...]) -> float | None:
    """The size factor for p (spec §6 bands); None when p is below every band (skip MODEL.LOW_P)."""
    for band in bands:
        if p > band.above or (not band.strict and p == band.above):
            return band.size_mult
    return None
