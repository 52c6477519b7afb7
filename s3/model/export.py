"""scikit-learn → ONNX in the form the engine loads (`s3.adapters.onnx_model`): one float
tensor input ``features`` of shape [N, k] whose columns are ``[model] inputs``, the classifier's
``label`` and ``probabilities`` [N, 2] (p = column 1), and the metadata the loader checks
(``s3.inputs``) plus the model's id and training facts.

Deterministic: the same fitted estimator gives the same bytes (no time stamps in the file).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from s3.adapters.onnx_model import METADATA_INPUTS

INPUT_NAME = "features"
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def to_onnx(
    estimator: Any, inputs: Sequence[str], *, metadata: Mapping[str, str] | None = None
) -> bytes:
    """The ONNX bytes of a fitted binary classifier (or a Pipeline ending in one) over the
    columns ``inputs``."""
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError as exc:  # pragma: no cover - the extras are installed by make setup
        from s3.adapters.onnx_model import INSTALL_HINT

        raise RuntimeError(f"exporting a model needs skl2onnx: {INSTALL_HINT}") from exc
    classes = list(getattr(estimator, "classes_", []))
    if classes != [0, 1]:
        raise ValueError(f"a binary classifier of classes [0, 1] is needed, found {classes}")
    options = {id(_final(estimator)): {"zipmap": False}}
    onx = convert_sklearn(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(inputs)]))],
        options=options,
        target_opset=TARGET_OPSET,
    )
    meta = {METADATA_INPUTS: ",".join(inputs), **(metadata or {})}
    del onx.metadata_props[:]
    for k in sorted(meta):
        entry = onx.metadata_props.add()
        entry.key, entry.value = k, str(meta[k])
    onx.producer_name, onx.producer_version, onx.doc_string = "s3 model train", "1", ""
    onx.graph.name = "s3_model"  # skl2onnx names it with a random uuid
    data: bytes = onx.SerializeToString(deterministic=True)
    return data


def _final(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator
