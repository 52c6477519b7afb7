"""ONNX models and bundles for the model tests: scikit-learn fitted on fixed real data and
exported by `s3.model.export`, and small graphs written with onnx.helper (a model that answers
NaN or 1.5, one that runs for seconds until cancelled)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from s3.model.export import to_onnx

ROOT = Path(__file__).resolve().parents[3]
DEFAULT = ROOT / "rulesets" / "default"
SAMPLE = ROOT / "data" / "samples" / "features_real.jsonl"
INPUTS = (
    "spread_bps",
    "depth_top1_usdt",
    "ret_1m",
    "vol_1m_bps",
    "imbalance_top1",
    "trade_flow_1m",
)
MODEL_SECTION = re.compile(r"(?ms)^\[model\]\n.*?(?=^\[health\])")


def real_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]


def fixed_data() -> tuple[np.ndarray, np.ndarray]:
    """X: the real sample's numeric features; y: a fixed, noisy label (taker flow and book
    lean plus seeded noise), so the fit is the same on every run and p takes many values."""
    rows = real_rows()
    x = np.array([[r[n] for n in INPUTS] for r in rows], dtype=np.float64)
    flow, imb = x[:, INPUTS.index("trade_flow_1m")], x[:, INPUTS.index("imbalance_top1")]
    noise = np.random.default_rng(7).normal(0.0, 0.5, len(x))
    y = (2 * flow + (imb - 0.5) + noise > 0).astype(int)
    return x, y


def fit(kind: str) -> Any:
    x, y = fixed_data()
    if kind == "logistic":
        est = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    else:
        est = GradientBoostingClassifier(
            n_estimators=40, max_depth=2, learning_rate=0.05, random_state=0
        )
    return est.fit(x, y)


def model_toml(
    file: str = "model/p.onnx", inputs: tuple[str, ...] | None = INPUTS, **extra: Any
) -> str:
    lines = ["[model]", 'kind = "onnx"', f'file = "{file}"', "deadline_ms = 50"]
    if inputs is not None:
        lines.append("inputs = [" + ", ".join(f'"{n}"' for n in inputs) + "]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n\n"


def make_bundle(
    root: Path,
    data: bytes | None,
    *,
    section: str | None = None,
    file: str = "model/p.onnx",
    rev: int = 1,
    name: str = "onnx_bundle",
) -> Path:
    """rulesets/default (without its cases) with ``section`` as its [model] table and ``data``
    as the model file."""
    target = root / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(DEFAULT, target, ignore=shutil.ignore_patterns("cases", "examples"))
    text = (target / "bundle.toml").read_text()
    assert MODEL_SECTION.search(text), "the default bundle's [model] table moved"
    text = MODEL_SECTION.sub((section or model_toml(file)).replace("\\", "\\\\"), text, count=1)
    text = re.sub(r"(?m)^rev = \d+$", f"rev = {rev}", text, count=1)
    (target / "bundle.toml").write_text(text)
    if data is not None:
        (target / file).parent.mkdir(parents=True, exist_ok=True)
        (target / file).write_bytes(data)
    return target


def sklearn_onnx(kind: str = "logistic", **meta: str) -> tuple[Any, bytes]:
    est = fit(kind)
    return est, to_onnx(est, INPUTS, metadata=meta)


def _model(graph: onnx.GraphProto) -> bytes:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def column_model(op: str = "Identity", *, inputs: tuple[str, ...] = ("imbalance_top1",)) -> bytes:
    """p = op(first column): Identity passes a feature through (1.5 in → p = 1.5), Log of a
    negative feature is NaN. One float input [N, k], one output [N, 1]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, len(inputs)])
    p = helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 1])
    nodes = [
        helper.make_node(
            "Constant", [], ["starts"], value=helper.make_tensor("s", TensorProto.INT64, [1], [0])
        ),
        helper.make_node(
            "Constant", [], ["ends"], value=helper.make_tensor("e", TensorProto.INT64, [1], [1])
        ),
        helper.make_node(
            "Constant", [], ["axes"], value=helper.make_tensor("a", TensorProto.INT64, [1], [1])
        ),
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["first"]),
        helper.make_node(op, ["first"], ["p"]),
    ]
    return _model(helper.make_graph(nodes, "column", [x], [p]))


def per_feature_model(names: tuple[str, ...], types: tuple[int, ...] | None = None) -> bytes:
    """One input per feature ([N, 1] each), p = sigmoid(sum of them)."""
    types = types or tuple(TensorProto.FLOAT for _ in names)
    ins = [
        helper.make_tensor_value_info(n, t, [None, 1]) for n, t in zip(names, types, strict=True)
    ]
    p = helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 1])
    casts = [helper.make_node("Cast", [n], [f"{n}_f"], to=TensorProto.FLOAT) for n in names]
    nodes = [
        *casts,
        helper.make_node("Sum", [f"{n}_f" for n in names], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p"]),
    ]
    return _model(helper.make_graph(nodes, "per_feature", ins, [p]))


def slow_model(iterations: int = 2_000_000_000, *, inputs: tuple[str, ...] = INPUTS) -> bytes:
    """A model that takes seconds (a Loop of ``iterations`` additions before p = 0.7): a runtime
    that is slow for real, which only `RunOptions.terminate` stops."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, len(inputs)])
    p = helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 1])
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node(
                "Constant",
                [],
                ["one"],
                value=helper.make_tensor("o", TensorProto.FLOAT, [1], [1.0]),
            ),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1]),
        ],
    )
    nodes = [
        helper.make_node(
            "Constant",
            [],
            ["trips"],
            value=helper.make_tensor("t", TensorProto.INT64, [], [iterations]),
        ),
        helper.make_node(
            "Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])
        ),
        helper.make_node(
            "Constant", [], ["v0"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
        ),
        helper.make_node("Loop", ["trips", "cond", "v0"], ["v_final"], body=body),
        helper.make_node(
            "Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])
        ),
        helper.make_node("Mul", ["v_final", "zero"], ["nothing"]),
        helper.make_node(
            "Constant",
            [],
            ["pc"],
            value=helper.make_tensor("pc_t", TensorProto.FLOAT, [1, 1], [0.7]),
        ),
        helper.make_node("Add", ["pc", "nothing"], ["p_one"]),
        helper.make_node("Shape", ["x"], ["xshape"]),
        helper.make_node(
            "Constant", [], ["s0"], value=helper.make_tensor("s0_t", TensorProto.INT64, [1], [0])
        ),
        helper.make_node(
            "Constant", [], ["s1"], value=helper.make_tensor("s1_t", TensorProto.INT64, [1], [1])
        ),
        helper.make_node("Slice", ["xshape", "s0", "s1"], ["n"]),
        helper.make_node("Concat", ["n", "s1"], ["pshape"], axis=0),
        helper.make_node("Expand", ["p_one", "pshape"], ["p"]),
    ]
    return _model(helper.make_graph(nodes, "slow", [x], [p]))


def by_input_model() -> bytes:
    """One real ONNX model that shows every degradation by its input ``oi_change_1h`` (an
    optional feature): p = the input itself (0.7 is a probability, 1.5 is not), after a Loop of
    int(input) additions (1e9 runs for hours unless cancelled); absent, the feature is missing."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    p = helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 1])
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node(
                "Constant",
                [],
                ["one"],
                value=helper.make_tensor("o", TensorProto.FLOAT, [1], [1.0]),
            ),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1]),
        ],
    )
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["xmax"], keepdims=0),
        helper.make_node("Cast", ["xmax"], ["trips"], to=TensorProto.INT64),
        helper.make_node(
            "Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])
        ),
        helper.make_node(
            "Constant", [], ["v0"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
        ),
        helper.make_node("Loop", ["trips", "cond", "v0"], ["v_final"], body=body),
        helper.make_node(
            "Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])
        ),
        helper.make_node("Mul", ["v_final", "zero"], ["nothing"]),
        helper.make_node("Add", ["x", "nothing"], ["p"]),
    ]
    return _model(helper.make_graph(nodes, "by_input", [x], [p]))


BY_INPUT_SECTION = model_toml(inputs=("oi_change_1h",))
