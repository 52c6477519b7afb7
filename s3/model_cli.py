"""`s3 model explain` (the model's p on one snapshot and what each feature contributed) and
`s3 model train` (fit, export and judge a model on replayed real tapes; see docs/model.md)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from s3.rules_cli import UsageError, _load_features


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


def explain_doc(snap: Any, features: dict[str, Any]) -> dict[str, Any]:
    """What `s3 model explain` shows, as data: the model, its p, the band it maps to, and each
    feature's contribution (logistic: wᵢ·xᵢ of the logit; ONNX: the inputs and their values)."""
    from s3.core.model import logistic_contributions, map_p, model_of

    spec = snap.params.model
    validated, problems = snap.ruleset.schema.validate(features)
    if problems:
        raise UsageError("; ".join(f"features: {p.code} {p.message}" for p in problems))
    doc: dict[str, Any] = {
        "bundle": f"{snap.bundle_id} rev {snap.rev}",
        "kind": spec.kind,
        "model_id": spec.model_id,
        "trained_at_ms": spec.trained_at_ms,
        "trained_on": list(spec.trained_on),
    }
    if spec.kind == "none":
        return {**doc, "p": None, "note": "the bundle has no model: size_mult_ml is 1.0"}
    result = model_of(snap)(validated)
    doc["p"] = result.p
    doc["degraded"] = result.degraded
    mapped = map_p(result.p, spec.bands) if result.p is not None else 1.0
    doc["size_mult_ml"] = mapped
    doc["bands"] = [
        {"above": b.above, "size_mult": b.size_mult, "strict": b.strict} for b in spec.bands
    ]
    if spec.kind == "logistic":
        try:
            parts = logistic_contributions(spec, validated)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"features: cannot compute the contributions: {exc!r}") from None
        doc["bias"] = spec.bias
        doc["contributions"] = [
            {"feature": k, "value": validated[k], "weight": spec.weights[k], "contribution": v}
            for k, v in sorted(parts.items(), key=lambda kv: -abs(kv[1]))
        ]
        doc["logit"] = spec.bias + sum(parts.values())
    else:
        runtime = snap.model_runtime
        doc["file"] = spec.file
        doc["sha256"] = runtime.sha256
        doc["inputs"] = [{"feature": n, "value": validated.get(n)} for n in runtime.features]
        doc["note"] = (
            "an ONNX model's own output; for trees, the training report's permutation "
            "importance table says which features matter"
        )
    return doc


def explain(args: argparse.Namespace) -> int:
    from s3.replay_cli import _bundle

    features = _load_features(args.features)
    snap = _bundle(args.bundle)
    if snap is None:
        return 1
    doc = explain_doc(snap, features)
    if args.format == "json":
        _out(json.dumps(doc, indent=2))
        return 0
    _out(f"bundle {doc['bundle']}: model {doc['kind']} {doc['model_id'] or ''}".rstrip())
    if doc.get("trained_at_ms") is not None:
        import datetime as dt

        when = dt.datetime.fromtimestamp(doc["trained_at_ms"] / 1000, dt.UTC)
        _out(f"trained at {when.isoformat().replace('+00:00', 'Z')}")
    if doc["trained_on"]:
        _out("trained on: " + "; ".join(doc["trained_on"]))
    if doc["p"] is None:
        _out(doc.get("note") or f"no p: {doc['degraded']} (size_mult_ml 1.0)")
        return 0
    sm = doc["size_mult_ml"]
    band = f"size_mult_ml x{sm:g}" if sm is not None else "below every band: skip (MODEL.LOW_P)"
    _out(f"p = {doc['p']:.6f} -> {band}")
    if doc["kind"] == "logistic":
        _out("")
        _out(f"  {'feature':<20}{'value':>14}{'weight':>10}{'w*x':>12}")
        for c in doc["contributions"]:
            _out(
                f"  {c['feature']:<20}{c['value']:>14.6g}{c['weight']:>10.4g}"
                f"{c['contribution']:>12.4f}"
            )
        _out(f"  {'bias':<44}{doc['bias']:>12.4f}")
        z = doc["logit"]
        _out(f"  {'logit z':<44}{z:>12.4f}   p = 1 / (1 + e^-z) = {1 / (1 + math.exp(-z)):.6f}")
    else:
        _out(f"file {doc['file']} (sha256 {doc['sha256'][:12]})")
        for i in doc["inputs"]:
            _out(f"  {i['feature']:<20}{i['value']!s:>14}")
        _out(doc["note"])
    return 0


def train(args: argparse.Namespace) -> int:
    from s3.model.train import TrainError, TrainOptions
    from s3.model.train import train as run_train

    try:
        report = run_train(
            args.bundle,
            args.tape,
            args.out,
            TrainOptions(seed=args.seed, folds=args.folds, limit=args.limit),
            progress=None if args.quiet else _err,
        )
    except TrainError as exc:
        _err(f"s3 model train: {exc}")
        return 1
    if args.json:
        _out(json.dumps(report, indent=2, sort_keys=True))
        return 0
    _out((Path(args.out) / "report" / "training.md").read_text(encoding="utf-8"))
    _out(f"bundle written to {args.out} (report in {args.out}/report/)")
    return 0


def add_commands(sub: Any, parser_class: Any) -> None:
    m = sub.add_parser("model", help="explain and train the L2 model (see docs/model.md)")
    msub = m.add_subparsers(dest="model_command", required=True, parser_class=parser_class)
    e = msub.add_parser("explain", help="the model's p on one snapshot and each feature's part")
    e.add_argument("bundle", metavar="BUNDLE")
    e.add_argument(
        "--features", required=True, metavar="FILE_OR_JSON", help="a JSON object or a .json file"
    )
    e.add_argument("--format", choices=("human", "json"), default="human")
    e.set_defaults(func=explain)
    t = msub.add_parser(
        "train", help="fit, export and judge a model on the outcomes of replayed tapes"
    )
    t.add_argument("--bundle", default="rulesets/default", help="the bundle to train for")
    t.add_argument(
        "--tape", action="append", required=True, metavar="TAPE", help="a real tape (repeatable)"
    )
    t.add_argument("--out", required=True, metavar="DIR", help="the bundle directory to write")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--folds", type=int, default=4, help="walk-forward test blocks")
    t.add_argument("--limit", type=int, default=0, help="only the first N events of each tape")
    t.add_argument("--json", action="store_true", help="print the report as JSON")
    t.add_argument("--quiet", action="store_true", help="no progress on stderr")
    t.set_defaults(func=train)
