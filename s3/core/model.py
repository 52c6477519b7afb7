"""L2, the confidence model: a built-in logistic regression, the ONNX kind's hook, and the
spec's piecewise mapping.

A model is any callable from the validated feature snapshot to a `ModelResult`. Deadlines are
enforced around the call by `s3.adapters.model_runner` (the core has no clock); here a model
that raises is turned into a degraded result, never an exception, and `checked` turns an answer
that is no probability into one.

A degraded result names its reason first (the metric's label and what a reader filters on):

- ``MODEL.TIMEOUT``: no answer within the deadline (the call was abandoned);
- ``MODEL.ERROR``: the model raised, or a feature it reads is missing or not a number;
- ``MODEL.BAD_OUTPUT``: an answer that is not a probability (NaN, infinite, outside [0, 1]).

The ONNX kind (`s3.adapters.onnx_model`) is built when the bundle is loaded, once per revision,
and travels with the `BundleSnapshot` (`model_of`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from s3.core.params import Band, ModelSpec
from s3.core.types import ModelResult

if TYPE_CHECKING:
    from s3.core.decide import BundleSnapshot

Model = Callable[[Mapping[str, Any]], ModelResult]

TIMEOUT = "MODEL.TIMEOUT"
ERROR = "MODEL.ERROR"
BAD_OUTPUT = "MODEL.BAD_OUTPUT"
REASONS = (TIMEOUT, ERROR, BAD_OUTPUT)


def degraded(reason: str, why: str) -> ModelResult:
    """A result without p: ``reason`` is one of `REASONS`."""
    return ModelResult(degraded=f"{reason}: {why}")


def checked(result: ModelResult) -> ModelResult:
    """``result``, or MODEL.BAD_OUTPUT when its p is not a probability."""
    p = result.p
    if p is None:
        return result
    if type(p) is float and 0.0 <= p <= 1.0:  # the usual answer (NaN fails both comparisons)
        return result
    if isinstance(p, bool) or not isinstance(p, int | float):
        return degraded(BAD_OUTPUT, f"p = {p!r} is not a number")
    if not math.isfinite(p) or not 0.0 <= p <= 1.0:
        return degraded(BAD_OUTPUT, f"p = {p!r} is not a probability in [0, 1]")
    return ModelResult(p=float(p))


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


def logistic_contributions(spec: ModelSpec, features: Mapping[str, Any]) -> dict[str, float]:
    """Each feature's term wᵢ·xᵢ of the logit (what `s3 model explain` shows)."""
    return {name: w * float(features[name]) for name, w in spec.weights.items()}


class LogisticModel:
    """The built-in model of a bundle's `[model]` table."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def __call__(self, features: Mapping[str, Any]) -> ModelResult:
        try:
            return ModelResult(p=logistic_p(self.spec, features))
        except KeyError as exc:
            return degraded(ERROR, f"feature {exc.args[0]!r} is missing")
        except (ValueError, OverflowError) as exc:
            return degraded(ERROR, str(exc))


def no_model(features: Mapping[str, Any]) -> ModelResult:
    """`kind = "none"`: no L2 stage; the decision records p as absent, not degraded."""
    return ModelResult(p=None, degraded=None)


def build_model(spec: ModelSpec) -> Model:
    """The built-in model of ``spec`` (logistic or none). The ONNX kind needs its file and
    session, built with the snapshot: use `model_of`."""
    if spec.kind == "onnx":
        raise ValueError("an onnx model is built when its bundle is loaded: use model_of(snapshot)")
    return LogisticModel(spec) if spec.kind == "logistic" else no_model


def model_of(snap: BundleSnapshot) -> Model:
    """The model of a bundle revision: its ONNX runtime (built at load) or the built-in one."""
    if snap.params.model.kind == "onnx":
        if snap.model_runtime is None:
            raise ValueError(
                f"bundle {snap.bundle_id} rev {snap.rev} names an onnx model but was loaded "
                "without it (load it with s3.config.bundle.load_dir)"
            )
        runtime: Model = snap.model_runtime
        return runtime
    return build_model(snap.params.model)


def default_model_id(spec: ModelSpec, file_sha256: str | None = None) -> str | None:
    """``kind:digest`` of what the model computes: the weights, or the model file's sha256."""
    if spec.kind == "none":
        return None
    if spec.kind == "onnx":
        return f"onnx:{(file_sha256 or '')[:12]}"
    body = repr((spec.bias, sorted(spec.weights.items()))).encode()
    return f"logistic:{hashlib.sha256(body).hexdigest()[:12]}"


def map_p(p: float, bands: tuple[Band, ...]) -> float | None:
    """The size factor for p (spec §6 bands); None when p is below every band (skip MODEL.LOW_P)."""
    for band in bands:
        if p > band.above or (not band.strict and p == band.above):
            return band.size_mult
    return None
