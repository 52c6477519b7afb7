"""The ONNX kind of L2: a model file inside the bundle, run by onnxruntime on the CPU.

Built once per bundle revision, when the revision is loaded (`s3.config.bundle.load_dir`: at
publish, at reload, by `s3 rules lint`), and carried by the `BundleSnapshot`, so a reload swaps
the rules and the model in one assignment (RCU) and a decision never sees a half-loaded model.

Loading verifies the file against the bundle before anything runs it:

- onnxruntime must accept it (a file it cannot load is an error naming the file);
- inputs, one of two forms: **one tensor** ``[N, k]`` of float or double whose ``k`` columns are
  the features listed in ``[model] inputs`` (in that order; ``FEATURE=VALUE`` is an indicator
  column of an enum feature, 1.0 when it has that value, such as ``side=BUY``; a model exported
  by `s3 model train` also carries the list in its metadata ``s3.inputs``, which must agree), or
  **one input per feature**, each named after a numeric feature of ``[features]``, ``[N, 1]``
  float or double;
- the output is one probability: a single float output of one column, or a binary classifier's
  ``label`` plus ``[N, 2]`` probabilities (p is column 1, scikit-learn's convention);
- a probe row (zeros) runs and answers one value.

A mismatch is a diagnostic naming both sides (what the model has, what the bundle declares).

At decision time the session runs single-threaded (intra- and inter-op threads 1, no spinning),
so it does not compete with the event loop; `s3.adapters.model_runner.DeadlineModel` runs each
call on a thread it can abandon and cancels a late run through ``RunOptions.terminate``.

onnxruntime and numpy are optional (``pip install -e '.[model]'``): without them a bundle that
names an ONNX model is refused with a diagnostic saying what to install.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from s3.core.model import ERROR, degraded
from s3.core.params import ModelSpec
from s3.core.types import ModelResult

INSTALL_HINT = "pip install -e '.[model]' (or: pip install onnxruntime numpy)"
METADATA_INPUTS = "s3.inputs"
"""Metadata key of an exported model: its input features, comma-separated, in column order."""
_FLOAT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64"}
_NUMERIC = ("number", "int")


class OnnxUnavailable(RuntimeError):
    """onnxruntime (or numpy) is not installed."""


def runtime_modules() -> tuple[Any, Any]:
    """(onnxruntime, numpy), or OnnxUnavailable saying what to install."""
    try:
        import numpy
        import onnxruntime
    except ImportError as exc:
        raise OnnxUnavailable(
            f"the ONNX model kind needs onnxruntime and numpy ({exc.name or exc} is not "
            f"installed): {INSTALL_HINT}"
        ) from None
    return onnxruntime, numpy


@dataclass(frozen=True)
class Problem:
    """One reason the file does not fit the bundle: the manifest key it concerns, a message."""

    key: str
    message: str
    hint: str | None = None


def session_options(ort: Any) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def _shape(arg: Any) -> str:
    return "[" + ", ".join("N" if not isinstance(d, int) else str(d) for d in arg.shape) + "]"


def _describe(args: list[Any]) -> str:
    return ", ".join(f"'{a.name}' {a.type} {_shape(a)}" for a in args) or "none"


class OnnxModel:
    """A verified ONNX model: features → `ModelResult`. Build it with `load_onnx`."""

    def __init__(
        self,
        session: Any,
        np: Any,
        ort: Any,
        *,
        columns: tuple[str, ...] | None,
        named: tuple[tuple[str, str], ...],
        dtype: str,
        output: str,
        column: int,
        sha256: str,
        size: int,
    ):
        self.session = session
        self._np = np
        self._ort = ort
        self.columns = columns
        """Single-tensor form: the features of its columns; None for the per-feature form."""
        self.named = named
        """Per-feature form: (input name, numpy dtype) of each input."""
        self._dtype = getattr(np, dtype)
        self.input_name = session.get_inputs()[0].name
        self.output = output
        self.column = column
        self.sha256 = sha256
        self.size = size
        self.features = columns if columns is not None else tuple(n for n, _ in named)
        parsed = [
            (c.partition("=")[0], c.partition("=")[2] if "=" in c else None) for c in self.features
        ]
        self._indicators = parsed if any(v is not None for _, v in parsed) else None
        """Single-tensor columns ``FEATURE=VALUE`` (1.0 when the enum feature has the value)."""

    def run_options(self) -> Any:
        """A fresh `RunOptions` for one call (setting ``terminate`` cancels that run)."""
        options = self._ort.RunOptions()
        options.log_severity_level = 4  # a cancelled run is reported by its result, not logged
        return options

    def feeds(self, features: Mapping[str, Any]) -> dict[str, Any]:
        """The session's inputs for one snapshot; KeyError for a missing feature, ValueError for
        a value that is not a finite number."""
        np = self._np
        if self.columns is not None:
            if self._indicators:
                row = [
                    features[n] if v is None else float(features.get(n) == v)
                    for n, v in self._indicators
                ]
            else:
                row = [features[n] for n in self.columns]
            total = sum(row)  # TypeError for text; NaN or ±inf for a value that is not finite
            if total - total != 0:
                bad = [n for n, v in zip(self.columns, row, strict=True) if v - v != 0]
                raise ValueError(f"feature {(bad or self.columns)[0]!r} is not a finite number")
            return {self.input_name: np.array([row], dtype=self._dtype)}
        out = {}
        for name, dtype in self.named:
            x = np.array([[features[name]]], dtype=getattr(np, dtype))
            if not np.isfinite(x).all():
                raise ValueError(f"feature {name!r} is not a finite number")
            out[name] = x
        return out

    def p_many(self, rows: Any) -> Any:
        """p for a matrix of rows in the single-tensor form's column order (training, checks)."""
        x = self._np.asarray(rows, dtype=self._dtype)
        if self.columns is None:
            feeds = {
                name: x[:, i : i + 1].astype(getattr(self._np, dt))
                for i, (name, dt) in enumerate(self.named)
            }
        else:
            feeds = {self.input_name: x}
        out = self.session.run([self.output], feeds)[0]
        return out.reshape(len(x), -1)[:, self.column].astype(self._np.float64)

    def run(self, features: Mapping[str, Any], run_options: Any = None) -> ModelResult:
        try:
            feeds = self.feeds(features)
        except KeyError as exc:
            return degraded(ERROR, f"feature {exc.args[0]!r} is missing")
        except Exception as exc:  # text, NaN, a value beyond the input's float range
            return degraded(ERROR, f"bad input: {type(exc).__name__}: {exc}")
        try:
            out = self.session.run([self.output], feeds, run_options)[0]
        except Exception as exc:  # the runtime's failure (or a run terminated late)
            return degraded(ERROR, f"onnxruntime: {type(exc).__name__}: {exc}")
        try:
            p = float(out.reshape(-1)[self.column])
        except (IndexError, TypeError, ValueError) as exc:
            return degraded(ERROR, f"output '{self.output}' has no value {self.column}: {exc}")
        return ModelResult(p=p)  # NaN or out of range: MODEL.BAD_OUTPUT in decide (`checked`)

    def __call__(self, features: Mapping[str, Any]) -> ModelResult:
        return self.run(features)


def load_onnx(
    data: bytes, spec: ModelSpec, feature_types: Mapping[str, str], *, name: str
) -> tuple[OnnxModel | None, list[Problem]]:
    """Build and verify the session of a model file (``name`` as the bundle calls it) against
    ``[model] inputs`` and the feature types of ``[features]``.

    Raises OnnxUnavailable when onnxruntime is not installed.
    """
    ort, np = runtime_modules()
    try:
        session = ort.InferenceSession(
            data, session_options(ort), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return None, [Problem("file", f"'{name}' is not a model onnxruntime can load: {first}")]
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems: list[Problem] = []
    columns: tuple[str, ...] | None = None
    named: list[tuple[str, str]] = []
    dtype = "float32"
    listed = tuple(spec.inputs)
    if listed or (len(inputs) == 1 and inputs[0].name not in feature_types):
        arg = inputs[0]
        if len(inputs) != 1:
            problems.append(
                Problem(
                    "inputs",
                    f"model.inputs lists the columns of one tensor, but '{name}' has "
                    f"{len(inputs)} inputs: {_describe(inputs)}",
                    "drop model.inputs when the model has one input per feature",
                )
            )
        elif not listed:
            problems.append(
                Problem(
                    "inputs",
                    f"'{name}' has one input {_describe(inputs)} that is not a feature: "
                    "model.inputs must list the features of its columns, in order",
                )
            )
        elif arg.type not in _FLOAT_TYPES:
            problems.append(
                Problem(
                    "inputs",
                    f"'{name}' input '{arg.name}' is {arg.type}; the features of model.inputs "
                    "are numbers: the model needs a tensor(float) or tensor(double) input",
                )
            )
        elif len(arg.shape) != 2 or (isinstance(arg.shape[1], int) and arg.shape[1] != len(listed)):
            problems.append(
                Problem(
                    "inputs",
                    f"model.inputs lists {len(listed)} features, '{name}' input '{arg.name}' "
                    f"has shape {_shape(arg)}: expected [N, {len(listed)}]",
                )
            )
        else:
            columns, dtype = listed, _FLOAT_TYPES[arg.type]
            meta = session.get_modelmeta().custom_metadata_map.get(METADATA_INPUTS)
            if meta is not None and tuple(meta.split(",")) != listed:
                problems.append(
                    Problem(
                        "inputs",
                        f"'{name}' was trained on the columns [{meta}] (its metadata "
                        f"{METADATA_INPUTS}), model.inputs lists [{','.join(listed)}]",
                        "list the features in the order the model was trained on",
                    )
                )
    else:
        for arg in inputs:
            ftype = feature_types.get(arg.name)
            if ftype is None:
                problems.append(
                    Problem(
                        "file",
                        f"'{name}' input '{arg.name}' ({arg.type}) is not a feature of [features]",
                        "name each input after a numeric feature, or give the model one "
                        "tensor input and list its columns in model.inputs",
                    )
                )
            elif ftype not in _NUMERIC:
                problems.append(
                    Problem(
                        "file",
                        f"'{name}' input '{arg.name}' is {arg.type}, the feature '{arg.name}' "
                        f"is {ftype}: S3 feeds a model numeric features only",
                    )
                )
            elif arg.type not in _FLOAT_TYPES:
                problems.append(
                    Problem(
                        "file",
                        f"'{name}' input '{arg.name}' is {arg.type}, the feature '{arg.name}' "
                        f"is a {ftype}: the input must be tensor(float) or tensor(double)",
                    )
                )
            elif len(arg.shape) not in (1, 2) or (
                len(arg.shape) == 2 and isinstance(arg.shape[1], int) and arg.shape[1] != 1
            ):
                problems.append(
                    Problem(
                        "file",
                        f"'{name}' input '{arg.name}' has shape {_shape(arg)}: one feature is "
                        "one column, [N, 1]",
                    )
                )
            else:
                named.append((arg.name, _FLOAT_TYPES[arg.type]))
    output, column = _probability_output(outputs, name, problems)
    if problems or output is None:
        return None, problems
    model = OnnxModel(
        session,
        np,
        ort,
        columns=columns,
        named=tuple(named),
        dtype=dtype,
        output=output,
        column=column,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    problem = _probe(model, spec.deadline_ms, name)
    return (None, [problem]) if problem is not None else (model, [])


def _probe(model: OnnxModel, deadline_ms: int, name: str) -> Problem | None:
    """Run a row of zeros twice (the first run warms up), each run cancelled after a bound, so
    loading a model that hangs cannot hang a publish or a reload; the second run must answer
    within the deadline, else every decision would time out."""
    import threading
    import time

    zeros = {c.partition("=")[0]: 0.0 for c in model.features}
    bound_s = max(1.0, 20 * deadline_ms / 1000)
    took = 0.0
    for _ in range(2):
        options = model.run_options()
        timer = threading.Timer(bound_s, lambda o=options: setattr(o, "terminate", True))
        timer.start()
        started = time.perf_counter()
        try:
            result = model.run(zeros, options)
        finally:
            timer.cancel()
        took = time.perf_counter() - started
        if options.terminate:
            return Problem(
                "file", f"'{name}' gave no answer on a probe row of zeros within {bound_s:g} s"
            )
        if result.p is None:
            return Problem("file", f"'{name}' fails on a probe row of zeros: {result.degraded}")
    if took * 1000 > deadline_ms:
        return Problem(
            "deadline_ms",
            f"'{name}' took {took * 1000:.1f} ms on one row, more than its deadline of "
            f"{deadline_ms} ms: every decision would time out",
        )
    return None


def _probability_output(
    outputs: list[Any], name: str, problems: list[Problem]
) -> tuple[str | None, int]:
    floats = [o for o in outputs if o.type in _FLOAT_TYPES]
    if len(outputs) == 1 and floats:
        o = floats[0]
        if len(o.shape) == 1 or (
            len(o.shape) == 2 and (not isinstance(o.shape[1], int) or o.shape[1] == 1)
        ):
            return o.name, 0
    pairs = [o for o in floats if len(o.shape) == 2 and o.shape[1] == 2]
    if len(outputs) == 2 and len(pairs) == 1 and any(o.type == "tensor(int64)" for o in outputs):
        return pairs[0].name, 1  # a binary classifier: label and [N, 2] probabilities
    hint = "export one probability: a float output [N, 1], or a binary classifier's [N, 2]"
    if any(o.type.startswith("seq(map") for o in outputs):
        hint = "export with skl2onnx option zipmap=False (a ZipMap output is a list of dicts)"
    problems.append(
        Problem("file", f"'{name}' outputs {_describe(outputs)}; S3 needs one probability", hint)
    )
    return None, 0
