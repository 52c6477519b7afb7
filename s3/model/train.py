"""`s3 model train`: the L2 model fitted on the outcomes of replayed real tapes, judged honestly.

1. **Labels.** The bundle, without its model (every entry the rules let through), replays each
   tape with `s3.replay.replay.simulate_outcomes` and budgets off, so every candidate entry is
   followed to its exit on its own: an entry whose take profit fills before its stop loss or
   time stop is a win (1), a stop or a time stop a loss (0); entries still open at the end of a
   tape or never filled have no label and are left out.
2. **Features.** The bundle's declared numeric features, plus ``side=BUY`` (an indicator column
   of the enum feature ``side``: the same move means opposite things for a buy and a sell).
   A feature missing from some entries, or constant over all of them (the bar tape's typical
   values), is left out and named in the report.
3. **Models.** A logistic regression (standard scaler + scikit-learn's LogisticRegression) and a
   gradient-boosted tree model (100 trees of depth 3, seeded), exported to ONNX
   (`s3.model.export`). The piecewise mapping (bands) is set from the training predictions:
   below their 20th percentile skip, to the 50th ×0.5, to the 90th ×1.0, above ×1.2.
4. **Purged walk-forward.** The labelled entries in time order are cut into ``folds + 1`` blocks;
   fold k tests on block k with models fitted on the entries before it whose label horizon ends
   before the test block starts, with a further gap (the gap is longer than the label horizon,
   the bundle's time stop). Never the same events, never a label that sees the test period.
5. **Scores.** AUC, Brier score and expected calibration error (10 bins) of the out-of-sample
   predictions of every fold, with 95 % confidence intervals from a seeded block bootstrap
   (blocks of two label horizons), for the two trained models, the bundle's hand-set logistic
   and "no model" (the training base rate); a reliability plot (SVG); permutation importance of
   each trained model on the last fold.
6. **Replay P&L.** Every test block is replayed as production would run it (budgets and
   concurrency on, exits simulated) with the bundle and (a) each trained model of that fold,
   (b) its hand-set logistic model, (c) no model; total P&L per variant with a paired block
   bootstrap 95 % interval of its difference to "no model".
7. **Bundle.** Both models fitted on every labelled entry go into ``OUT/model/``; ``bundle.toml``
   gets ``[model] kind = "onnx"`` with the one of lower out-of-sample Brier score, its inputs,
   id, ``trained_at`` (the end of the data it saw, so the same tapes give the same bytes) and
   ``trained_on`` (the tapes' windows), and the rev is the base rev + 1. The report goes to
   ``OUT/report/`` (not part of the bundle). ``verdict`` says whether the trained model beat
   "no model" on P&L with an interval above zero; when it did not, say so and keep the default
   bundle as it is.

Seeded and deterministic: the same tapes, bundle and options give the same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from s3.config.bundle import load_dir
from s3.core.decide import BundleSnapshot
from s3.core.model import Model, model_of, no_model
from s3.model.export import to_onnx
from s3.replay.outcomes import Trade
from s3.replay.replay import ReplayConfig, simulate_outcomes
from s3.replay.tape import Tape, load

Array = np.ndarray[Any, Any]
SIDE_COLUMN = "side=BUY"
BAND_QUANTILES = ((0.9, 1.2), (0.5, 1.0), (0.2, 0.5))
"""(quantile of the training p, size factor): above the 90th ×1.2, ... below the 20th: skip."""
KINDS = ("logistic", "gbt")


class TrainError(ValueError):
    """Training cannot go on (too few labels, one class only, a bundle that does not load)."""


@dataclass
class Labelled:
    """The labelled entries of every tape, in time order."""

    columns: tuple[str, ...]
    x: Array
    y: Array
    ts: Array
    exit_ts: Array
    tape: Array
    """Index of the tape each entry comes from."""
    handset_p: Array
    """The bundle's own (hand-set) model's p on each entry; NaN when it has none."""
    dropped: dict[str, str] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainOptions:
    seed: int = 0
    folds: int = 4
    min_train: int = 40
    """Fewest labelled entries (and of each class, at least 5) a fold trains on."""
    limit: int = 0
    """Read only the first ``limit`` events of each tape (0: all)."""


# -- labels ---------------------------------------------------------------------------------------------
def _numeric_features(snap: BundleSnapshot) -> list[str]:
    return [n for n, f in snap.ruleset.schema.features.items() if f.type in ("number", "int")]


def label_trades(tapes: Sequence[Tape], snap: BundleSnapshot) -> list[tuple[int, Trade]]:
    """Every entry the rules let through on each tape, followed to its exit on its own."""
    cfg = ReplayConfig(budgets=False)
    out: list[tuple[int, Trade]] = []
    for i, tape in enumerate(tapes):
        out += [(i, t) for t in simulate_outcomes(tape, snap, cfg, model=no_model)]
    return out


def build_labelled(trades: list[tuple[int, Trade]], snap: BundleSnapshot) -> Labelled:
    exits: dict[str, int] = {}
    kept: list[tuple[int, Trade]] = []
    for i, t in trades:
        exits[t.exit_reason] = exits.get(t.exit_reason, 0) + 1
        if t.exit_reason in ("tp", "sl", "time") and t.exit_ts is not None:
            kept.append((i, t))
    kept.sort(key=lambda it: (it[1].decision_ts, it[1].symbol, it[1].side, it[0]))
    dropped: dict[str, str] = {}
    columns: list[str] = []
    for name in _numeric_features(snap):
        vals = [t.features.get(name) for _, t in kept]
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in vals):
            dropped[name] = "missing from some entries"
        elif len({float(v) for v in vals if isinstance(v, int | float)}) <= 1:
            dropped[name] = "constant on these tapes"
        else:
            columns.append(name)
    columns.append(SIDE_COLUMN)
    x = np.array(
        [
            [float(t.side == "BUY") if c == SIDE_COLUMN else float(t.features[c]) for c in columns]
            for _, t in kept
        ],
        dtype=np.float64,
    ).reshape(len(kept), len(columns))
    handset = np.full(len(kept), np.nan)
    if snap.params.model.kind != "none":
        model = model_of(snap)
        for j, (_, t) in enumerate(kept):
            feats, _ = snap.ruleset.schema.validate(
                {**t.features, "side": t.side, "symbol": t.symbol}
            )
            r = model(feats)
            handset[j] = r.p if r.p is not None else np.nan
    return Labelled(
        tuple(columns),
        x,
        np.array([int(t.reached_tp) for _, t in kept], dtype=np.int64),
        np.array([t.decision_ts for _, t in kept], dtype=np.int64),
        np.array([t.exit_ts for _, t in kept], dtype=np.int64),
        np.array([i for i, _ in kept], dtype=np.int64),
        handset,
        dropped,
        dict(sorted(exits.items())),
    )


# -- models ---------------------------------------------------------------------------------------------
def fit(kind: str, x: Array, y: Array, seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        est = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    else:
        est = GradientBoostingClassifier(
            n_estimators=100, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=seed
        )
    return est.fit(x, y)


def predict(est: Any, x: Array) -> Array:
    """p as the ONNX model computes it (float32 input)."""
    return np.asarray(est.predict_proba(x.astype(np.float32))[:, 1], dtype=np.float64)


def bands_from(p_train: Array) -> list[dict[str, Any]]:
    """The piecewise mapping from the training predictions' quantiles (descending, distinct)."""
    out: list[dict[str, Any]] = []
    for q, mult in BAND_QUANTILES:
        above = float(np.quantile(p_train, q))
        above = min(1.0, max(0.0, round(above, 6)))
        if out and above >= out[-1]["above"]:
            continue
        out.append({"above": above, "size_mult": mult, "strict": q == BAND_QUANTILES[0][0]})
    return out


# -- scores ---------------------------------------------------------------------------------------------
def auc(y: Array, p: Array) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def brier(y: Array, p: Array) -> float:
    return float(np.mean((p - y) ** 2))


def ece(y: Array, p: Array, bins: int = 10) -> float:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += abs(float(p[m].mean()) - float(y[m].mean())) * m.sum() / len(y)
    return total


SCORES: dict[str, Callable[[Array, Array], float]] = {"auc": auc, "brier": brier, "ece": ece}


def blocks_of(ts: Array, block_ms: int) -> Array:
    return np.asarray(ts // max(1, block_ms), dtype=np.int64)


def block_bootstrap(
    blocks: Array, stat: Callable[[Array], float], seed: int, n: int = 400
) -> tuple[float, float]:
    """95 % interval of ``stat(indices)`` over resampled blocks (seeded)."""
    ids = np.unique(blocks)
    members = [np.flatnonzero(blocks == b) for b in ids]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        pick = rng.integers(0, len(ids), len(ids))
        idx = np.concatenate([members[k] for k in pick]) if len(pick) else np.array([], int)
        v = stat(idx)
        if math.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


# -- P&L ------------------------------------------------------------------------------------------------
def sub_tape(tape: Tape, start: int, end: int) -> Tape:
    """The events of ``tape`` with start <= ts < end, re-indexed (funding history kept)."""
    events = [e for e in tape.events if e.ts is not None and start <= e.ts < end]
    events = [dataclasses.replace(e, index=i) for i, e in enumerate(events)]
    return Tape(tape.header, events, {}, tape.path, tape.funding)


def pnl_trades(tape: Tape, snap: BundleSnapshot, model: Model | None) -> list[tuple[int, float]]:
    trades = simulate_outcomes(tape, snap, ReplayConfig(), model=model)
    return [(t.decision_ts, float(t.pnl)) for t in trades]


# -- bundle ---------------------------------------------------------------------------------------------
_MODEL_TABLE = re.compile(r"^\s*\[\[?\s*model(\.[A-Za-z_]+)?\s*\]\]?\s*(#.*)?$")
_ANY_TABLE = re.compile(r"^\s*\[")


def replace_model_section(text: str, section: str) -> str:
    """``bundle.toml`` with its [model] tables (and the comment right above them) replaced by
    ``section``, appended at the end."""
    lines = text.splitlines()
    keep: list[str] = []
    inside = False
    for line in lines:
        if _MODEL_TABLE.match(line):
            inside = True
            while keep and keep[-1].lstrip().startswith("#"):
                keep.pop()
            continue
        if inside and _ANY_TABLE.match(line):
            inside = False
        if not inside:
            keep.append(line)
    while keep and not keep[-1].strip():
        keep.pop()
    return "\n".join(keep) + "\n\n" + section


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def model_section(
    *,
    file: str,
    columns: Sequence[str],
    model_id: str,
    trained_at_ms: int,
    trained_on: Sequence[str],
    deadline_ms: int,
    bands: Sequence[dict[str, Any]],
    note: str,
) -> str:
    at = dt.datetime.fromtimestamp(trained_at_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"# L2: {note}",
        "[model]",
        'kind = "onnx"',
        f"file = {toml_str(file)}",
        "inputs = [" + ", ".join(toml_str(c) for c in columns) + "]",
        f"id = {toml_str(model_id)}",
        f"trained_at = {at}",
        "trained_on = [" + ", ".join(toml_str(w) for w in trained_on) + "]",
        f"deadline_ms = {deadline_ms}",
    ]
    for b in bands:
        lines += [
            "",
            "[[model.bands]]",
            f"above = {b['above']!r}",
            f"size_mult = {b['size_mult']!r}",
            f"strict = {'true' if b['strict'] else 'false'}",
        ]
    return "\n".join(lines) + "\n"


def windows(tape: Tape, name: str, gap_ms: int = 3_600_000) -> list[str]:
    """The tape's windows (no gap longer than an hour), as UTC ranges with their symbols."""
    ts = sorted(e.ts for e in tape.events if e.ts is not None)
    if not ts:
        return []
    out, start, prev = [], ts[0], ts[0]

    def fmt(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")

    syms = ",".join(tape.symbols)
    for t in [*ts[1:], None]:
        if t is None or t - prev > gap_ms:
            out.append(f"{name} {syms} {fmt(start)} -> {fmt(prev)} UTC")
            if t is not None:
                start = t
        if t is not None:
            prev = t
    return out


# -- the whole run --------------------------------------------------------------------------------------
def _fold_ranges(ts: Array, folds: int) -> list[tuple[int, int]]:
    """(start, end) indexes of folds + 1 consecutive blocks of about equal count."""
    n = len(ts)
    cuts = [round(n * k / (folds + 1)) for k in range(folds + 2)]
    return [(cuts[k], cuts[k + 1]) for k in range(folds + 1)]


def _with_model(
    base: Path, work: Path, name: str, data: bytes, section: str, rev: int
) -> BundleSnapshot:
    target = work / name
    shutil.copytree(base, target, ignore=shutil.ignore_patterns("cases", "examples", "report"))
    (target / "model").mkdir(exist_ok=True)
    (target / "model" / "p.onnx").write_bytes(data)
    text = (target / "bundle.toml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^rev = \d+", f"rev = {rev}", replace_model_section(text, section), count=1)
    (target / "bundle.toml").write_text(text, encoding="utf-8")
    result = load_dir(target)
    if result.snapshot is None:
        raise TrainError(
            "the trained bundle does not load: " + "; ".join(d.render() for d in result.diagnostics)
        )
    return result.snapshot


def train(
    bundle: str | Path,
    tape_paths: Sequence[str | Path],
    out: str | Path,
    options: TrainOptions | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train, judge and write the bundle; returns the report (also in OUT/report/)."""
    opt = options or TrainOptions()
    say = progress or (lambda s: None)
    base = Path(bundle)
    loaded = load_dir(base)
    if loaded.snapshot is None:
        raise TrainError(f"{bundle}: the bundle has errors; run s3 rules lint {bundle}")
    snap = loaded.snapshot
    tapes = [load(p, limit=opt.limit) for p in tape_paths]
    names = [Path(p).name for p in tape_paths]
    say(f"labelling the entries of {len(tapes)} tape(s) by their simulated outcome")
    lab = build_labelled(label_trades(tapes, snap), snap)
    n = len(lab.y)
    if n < 2 * opt.min_train or lab.y.sum() < 5 or lab.y.sum() > n - 5:
        raise TrainError(
            f"{n} labelled entries ({int(lab.y.sum())} wins): too few to train and judge a model "
            f"(at least {2 * opt.min_train}, and 5 of each class)"
        )
    horizon = snap.params.exits.time_stop_ms
    gap = horizon + 60_000
    block_ms = 2 * horizon
    ranges = _fold_ranges(lab.ts, opt.folds)
    oos: dict[str, list[Array]] = {k: [] for k in (*KINDS, "handset", "none")}
    oos_y: list[Array] = []
    oos_ts: list[Array] = []
    fold_docs: list[dict[str, Any]] = []
    pnl: dict[str, list[tuple[int, float]]] = {k: [] for k in (*KINDS, "handset", "none")}
    importance: dict[str, list[dict[str, Any]]] = {}
    work = Path(tempfile.mkdtemp(prefix="s3-train-"))
    try:
        for k in range(1, len(ranges)):
            lo, hi = ranges[k]
            if hi <= lo:
                continue
            test_start, test_end = int(lab.ts[lo]), int(lab.ts[hi - 1]) + 1
            train_idx = np.flatnonzero(lab.exit_ts[:lo] < test_start - gap)
            ytr = lab.y[train_idx]
            if len(train_idx) < opt.min_train or ytr.sum() < 5 or ytr.sum() > len(ytr) - 5:
                fold_docs.append({"fold": k, "skipped": f"{len(train_idx)} training entries"})
                continue
            say(f"fold {k}: train {len(train_idx)}, test {hi - lo}")
            test = np.arange(lo, hi)
            oos_y.append(lab.y[test])
            oos_ts.append(lab.ts[test])
            xtr, xte = lab.x[train_idx], lab.x[test]
            base_rate = float(ytr.mean())
            oos["none"].append(np.full(len(test), base_rate))
            oos["handset"].append(lab.handset_p[test])
            doc: dict[str, Any] = {
                "fold": k,
                "train": len(train_idx),
                "test": len(test),
                "train_wins": int(ytr.sum()),
                "test_wins": int(lab.y[test].sum()),
                "test_from_ms": test_start,
                "test_to_ms": test_end,
            }
            fold_snaps: dict[str, BundleSnapshot] = {}
            for kind in KINDS:
                est = fit(kind, xtr, ytr, opt.seed)
                oos[kind].append(predict(est, xte))
                data = to_onnx(est, lab.columns)
                section = model_section(
                    file="model/p.onnx",
                    columns=lab.columns,
                    model_id=f"fold{k}-{kind}",
                    trained_at_ms=int(lab.exit_ts[train_idx].max()),
                    trained_on=[],
                    deadline_ms=snap.params.model.deadline_ms,
                    bands=bands_from(predict(est, xtr)),
                    note="walk-forward fold",
                )
                fold_snaps[kind] = _with_model(base, work, f"f{k}-{kind}", data, section, snap.rev)
                if k == len(ranges) - 1 and 0 < lab.y[test].sum() < len(test):
                    from sklearn.inspection import permutation_importance

                    imp = permutation_importance(
                        est,
                        xte.astype(np.float32),
                        lab.y[test],
                        scoring="roc_auc",
                        n_repeats=5,
                        random_state=opt.seed,
                    )
                    importance[kind] = [
                        {"feature": c, "mean": float(m), "std": float(s)}
                        for c, m, s in sorted(
                            zip(
                                lab.columns, imp.importances_mean, imp.importances_std, strict=True
                            ),
                            key=lambda r: -r[1],
                        )
                    ]
            # replay P&L of the test block, production-like
            for ti, tape in enumerate(tapes):
                mask = lab.tape[test] == ti
                if not mask.any():
                    continue
                seg = sub_tape(tape, test_start, test_end)
                for kind in KINDS:
                    pnl[kind] += pnl_trades(seg, fold_snaps[kind], None)
                pnl["handset"] += pnl_trades(seg, snap, None)
                pnl["none"] += pnl_trades(seg, snap, no_model)
            fold_docs.append(doc)
        if not oos_y:
            raise TrainError("no walk-forward fold had enough earlier entries to train on")
        y = np.concatenate(oos_y)
        tso = np.concatenate(oos_ts)
        blocks = blocks_of(tso, block_ms)
        scores: dict[str, dict[str, Any]] = {}
        preds = {k: np.concatenate(v) for k, v in oos.items() if v}
        for name, p in preds.items():
            if np.isnan(p).all():
                continue
            row: dict[str, Any] = {}
            for sname, fn in SCORES.items():
                if name == "none" and sname == "auc":
                    row[sname] = {"value": 0.5, "ci95": [0.5, 0.5]}
                    continue
                lo95, hi95 = block_bootstrap(blocks, _scorer(fn, y, p), opt.seed)
                row[sname] = {"value": fn(y, p), "ci95": [lo95, hi95]}
            scores[name] = row
        pnl_doc = _pnl_report(pnl, block_ms, opt.seed)
        # the models shipped: fitted on every labelled entry
        say("fitting the models shipped on every labelled entry")
        shipped: dict[str, tuple[Any, bytes]] = {}
        trained_at = int(lab.exit_ts.max())
        trained_on = [w for tape, nm in zip(tapes, names, strict=True) for w in windows(tape, nm)]
        for kind in KINDS:
            est = fit(kind, lab.x, lab.y, opt.seed)
            meta = {"s3.trained_at_ms": str(trained_at), "s3.kind": kind}
            shipped[kind] = (est, to_onnx(est, lab.columns, metadata=meta))
        best = min(KINDS, key=lambda kd: scores[kd]["brier"]["value"])
        est, data = shipped[best]
        digest = hashlib.sha256(data).hexdigest()[:12]
        model_id = f"{best}-{digest}"
        verdict = _verdict(best, pnl_doc)
        section = model_section(
            file=f"model/{best}.onnx",
            columns=lab.columns,
            model_id=model_id,
            trained_at_ms=trained_at,
            trained_on=trained_on,
            deadline_ms=snap.params.model.deadline_ms,
            bands=bands_from(predict(est, lab.x)),
            note=f"trained by s3 model train ({best}, lower out-of-sample Brier score); "
            "bands from its training predictions' quantiles; see report/",
        )
        out_dir = Path(out)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(base, out_dir, ignore=shutil.ignore_patterns("report"))
        (out_dir / "model").mkdir(exist_ok=True)
        for kind, (_, blob) in shipped.items():
            (out_dir / "model" / f"{kind}.onnx").write_bytes(blob)
        text = (out_dir / "bundle.toml").read_text(encoding="utf-8")
        text = re.sub(
            r"(?m)^rev = \d+",
            f"rev = {snap.rev + 1}",
            replace_model_section(text, section),
            count=1,
        )
        (out_dir / "bundle.toml").write_text(text, encoding="utf-8")
        check = load_dir(out_dir)
        if check.snapshot is None:
            raise TrainError(
                "the bundle written does not load: "
                + "; ".join(d.render() for d in check.diagnostics)
            )
        report = {
            "bundle": str(bundle),
            "tapes": names,
            "options": dataclasses.asdict(opt),
            "label": "the take profit fills before the stop loss or the time stop "
            f"({horizon // 1000} s); entries followed one by one (budgets off)",
            "exits": lab.exits,
            "labelled": n,
            "wins": int(lab.y.sum()),
            "features": list(lab.columns),
            "dropped_features": lab.dropped,
            "gap_ms": gap,
            "label_horizon_ms": horizon,
            "folds": fold_docs,
            "scores": scores,
            "permutation_importance_last_fold": importance,
            "pnl": pnl_doc,
            "chosen": best,
            "model_id": model_id,
            "trained_at_ms": trained_at,
            "trained_on": trained_on,
            "verdict": verdict,
        }
        rep = out_dir / "report"
        rep.mkdir()
        (rep / "training.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        (rep / "reliability.svg").write_text(reliability_svg(y, preds))
        (rep / "training.md").write_text(render_markdown(report))
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _scorer(fn: Callable[[Array, Array], float], y: Array, p: Array) -> Callable[[Array], float]:
    return lambda idx: fn(y[idx], p[idx]) if len(idx) else math.nan


def _pnl_report(
    pnl: dict[str, list[tuple[int, float]]], block_ms: int, seed: int
) -> dict[str, Any]:
    all_ts = sorted({t for v in pnl.values() for t, _ in v})
    ids = sorted({t // block_ms for t in all_ts})
    out: dict[str, Any] = {}
    per_block = {
        k: np.array([sum(p for t, p in v if t // block_ms == b) for b in ids])
        for k, v in pnl.items()
    }
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(ids), len(ids)) for _ in range(1000)] if ids else []
    for k, v in pnl.items():
        total = float(sum(Decimal(repr(p)) for _, p in v))
        doc: dict[str, Any] = {"trades": len(v), "pnl_usdt": round(total, 6)}
        if draws:
            tot = [float(per_block[k][d].sum()) for d in draws]
            doc["ci95"] = [
                round(float(np.percentile(tot, 2.5)), 6),
                round(float(np.percentile(tot, 97.5)), 6),
            ]
            if k != "none":
                diff = [float((per_block[k][d] - per_block["none"][d]).sum()) for d in draws]
                doc["vs_none"] = round(total - float(sum(p for _, p in pnl["none"])), 6)
                doc["vs_none_ci95"] = [
                    round(float(np.percentile(diff, 2.5)), 6),
                    round(float(np.percentile(diff, 97.5)), 6),
                ]
        out[k] = doc
    return out


def _verdict(best: str, pnl_doc: dict[str, Any]) -> str:
    d = pnl_doc.get(best, {})
    ci = d.get("vs_none_ci95")
    if ci is None:
        return f"the {best} model made no replay trades to judge: keep the default bundle as it is"
    if ci[0] > 0:
        return (
            f"the {best} model beat 'no model' on replay P&L by {d['vs_none']:+.2f} USDT "
            f"(95 % CI {ci[0]:+.2f} .. {ci[1]:+.2f})"
        )
    return (
        f"the {best} model did NOT beat 'no model' on replay P&L: {d['vs_none']:+.2f} USDT, "
        f"95 % CI {ci[0]:+.2f} .. {ci[1]:+.2f} includes or lies below zero; keep the default "
        "bundle as it is"
    )


# -- report ---------------------------------------------------------------------------------------------
def reliability_svg(y: Array, preds: dict[str, Array], bins: int = 10) -> str:
    """Observed win rate against mean predicted p per bin, one line per model (no CDN, no JS)."""
    w, h, m = 420, 420, 50
    colors = {"logistic": "#1f77b4", "gbt": "#d62728", "handset": "#2ca02c", "none": "#7f7f7f"}

    def xy(px: float, py: float) -> tuple[float, float]:
        return m + px * (w - 2 * m), h - m - py * (h - 2 * m)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">',
        f'<rect x="{m}" y="{m}" width="{w - 2 * m}" height="{h - 2 * m}" fill="none" stroke="#000"/>',
        '<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#aaa" stroke-dasharray="4 3"/>'.format(
            *xy(0, 0), *xy(1, 1)
        ),
        f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">mean predicted p</text>',
        f'<text x="14" y="{h / 2}" text-anchor="middle" transform="rotate(-90 14 {h / 2})">'
        "observed win rate</text>",
        f'<text x="{w / 2}" y="20" text-anchor="middle">reliability (out-of-sample, {len(y)} entries)</text>',
    ]
    for t in range(0, 11, 2):
        x0, y0 = xy(t / 10, 0)
        parts.append(f'<text x="{x0:.1f}" y="{y0 + 14:.1f}" text-anchor="middle">{t / 10:g}</text>')
        x1, y1 = xy(0, t / 10)
        parts.append(f'<text x="{x1 - 6:.1f}" y="{y1 + 4:.1f}" text-anchor="end">{t / 10:g}</text>')
    for i, (name, p) in enumerate(sorted(preds.items())):
        ok = ~np.isnan(p)
        if not ok.any():
            continue
        pp, yy = p[ok], y[ok]
        idx = np.minimum((pp * bins).astype(int), bins - 1)
        pts = []
        for b in range(bins):
            sel = idx == b
            if sel.sum() >= 1:
                pts.append(xy(float(pp[sel].mean()), float(yy[sel].mean())))
        color = colors.get(name, "#000")
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{yv:.1f}" for x, yv in pts)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>'
            )
        parts += [f'<circle cx="{x:.1f}" cy="{yv:.1f}" r="3" fill="{color}"/>' for x, yv in pts]
        parts.append(f'<text x="{m + 8}" y="{m + 16 + 14 * i}" fill="{color}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _ci(d: dict[str, Any]) -> str:
    lo, hi = d["ci95"]
    return f"{d['value']:.4f} [{lo:.4f}, {hi:.4f}]"


def render_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Training report",
        "",
        f"Bundle `{r['bundle']}`, tapes: {', '.join(r['tapes'])}.",
        f"Label: {r['label']}. Exits: "
        + ", ".join(f"{k} {v}" for k, v in r["exits"].items())
        + f"; {r['labelled']} labelled entries, {r['wins']} wins.",
        f"Features: {', '.join(r['features'])}."
        + (
            " Left out: " + "; ".join(f"{k} ({v})" for k, v in r["dropped_features"].items()) + "."
            if r["dropped_features"]
            else ""
        ),
        f"Purged walk-forward: {len(r['folds'])} folds, gap {r['gap_ms'] // 1000} s "
        f"(label horizon {r['label_horizon_ms'] // 1000} s).",
        "",
        "## Out-of-sample scores (95 % block-bootstrap CI)",
        "",
        "| model | AUC | Brier | ECE |",
        "|---|---|---|---|",
    ]
    for name, s in r["scores"].items():
        lines.append(f"| {name} | {_ci(s['auc'])} | {_ci(s['brier'])} | {_ci(s['ece'])} |")
    lines += ["", "![reliability](reliability.svg)", "", "## Replay P&L of the test blocks", ""]
    lines += [
        "| variant | trades | P&L USDT | 95 % CI | vs no model | 95 % CI |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in r["pnl"].items():
        ci = d.get("ci95", ["", ""])
        vs = d.get("vs_none", "")
        vci = d.get("vs_none_ci95", ["", ""])
        lines.append(
            f"| {name} | {d['trades']} | {d['pnl_usdt']} | {ci[0]} .. {ci[1]} | {vs} | {vci[0]} .. {vci[1]} |"
        )
    for kind, rows in r["permutation_importance_last_fold"].items():
        lines += ["", f"## Permutation importance ({kind}, last fold, AUC drop)", ""]
        lines += ["| feature | mean | std |", "|---|---|---|"]
        lines += [f"| {x['feature']} | {x['mean']:.4f} | {x['std']:.4f} |" for x in rows]
    lines += [
        "",
        f"Chosen: **{r['chosen']}** (`{r['model_id']}`).",
        "",
        f"**Verdict:** {r['verdict']}.",
        "",
    ]
    return "\n".join(lines)
