"""Shadow bundles: every live decision is decided again by a second bundle, without side effects.

The shadow decides the very `DecisionInput` the live decision read (features, clock reading,
state, ATR), with the pure `decide()`: no reservation, no signal, no stream, no order. When its
verdict differs from the live one, `metrics.shadow_diffs{kind}` counts it and a `SHADOW_DIFF`
event goes to the store (`strategy_events`), with both sides in brief. A failure of the shadow
(its bundle raising, the store refusing the event) is counted as ``kind="error"`` and never
reaches the live path.

The hook is one call in `Engine._decide_live`, right after the live `decide()`:

    if self.shadow is not None: self.shadow.observe(inp, d)

(`Engine.shadow`, a field of the engine: None when no shadow is installed). `install_from_env(engine, store)` (one
call in `Service.from_settings`) installs the bundle named by `S3_SHADOW_BUNDLE`: a bundle
directory, or ``store:<bundle_id>:<rev>`` for a revision already in the store.

kinds (the first that applies): ``open_to_skip``, ``skip_to_open``, ``reason`` (both skip, for
different reasons), ``size`` (both open, another quantity or size multiplier), ``tp_sl``,
``rules`` (same verdict and numbers, other rules fired), and ``error``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3.adapters import store_docs
from s3.core.decide import BundleSnapshot, decide
from s3.core.model import Model, model_of
from s3.core.types import Decision, DecisionInput
from s3.metrics import Metrics, swallowed

SHADOW_ENV = "S3_SHADOW_BUNDLE"
KINDS = ("open_to_skip", "skip_to_open", "reason", "size", "tp_sl", "rules")


@dataclass(frozen=True)
class ShadowDiff:
    kind: str
    kinds: tuple[str, ...]
    live: dict[str, Any]
    shadow: dict[str, Any]


def brief(d: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {
        "bundle_id": d.bundle_id,
        "config_rev": d.config_rev,
        "decision": d.decision,
        "reason_detail": d.reason_detail,
        "rules_fired": list(d.rules_fired),
        "size_mult": d.size_mult,
        "tp_mult": d.tp_mult,
        "sl_mult": d.sl_mult,
    }
    if d.intent is not None:
        out |= {
            "qty": str(d.intent.qty),
            "tp_px": str(d.intent.tp_px),
            "sl_px": str(d.intent.sl_px),
        }
    return out


def compare(live: Decision, shadow: Decision) -> ShadowDiff | None:
    """How the shadow's decision differs from the live one (None: the same for all that counts;
    the bundle id, rev and intent id always differ and are not compared)."""
    kinds = []
    if live.decision != shadow.decision:
        kinds.append("open_to_skip" if live.decision == "open" else "skip_to_open")
    elif live.reason_detail != shadow.reason_detail:
        kinds.append("reason")
    li, si = live.intent, shadow.intent
    if li is not None and si is not None:
        if li.qty != si.qty or live.size_mult != shadow.size_mult:
            kinds.append("size")
        if (li.tp_px, li.sl_px) != (si.tp_px, si.sl_px):
            kinds.append("tp_sl")
    if live.rules_fired != shadow.rules_fired:
        kinds.append("rules")
    if not kinds:
        return None
    return ShadowDiff(kinds[0], tuple(kinds), brief(live), brief(shadow))


class Shadow:
    """One shadow bundle beside the live one."""

    def __init__(
        self,
        snap: BundleSnapshot,
        *,
        metrics: Metrics,
        store: Any,
        model: Model | None = None,
    ):
        self.snap = snap
        self.metrics = metrics
        self.store = store
        if model is None and snap.params.model.kind == "onnx":  # never hangs the live decision
            from s3.adapters.model_runner import DeadlineModel

            model = DeadlineModel(model_of(snap), snap.params.model.deadline_ms, workers=1)
        self.model = model or model_of(snap)
        self.decided = 0
        self.differed = 0
        self.errors = 0

    def observe(self, inp: DecisionInput, live: Decision) -> ShadowDiff | None:
        """Decide ``inp`` with the shadow bundle and record a difference; never raises."""
        try:
            shadow = decide(inp, self.snap, self.model)
            self.decided += 1
            diff = compare(live, shadow)
            if diff is None:
                return None
            self.differed += 1
            self.metrics.shadow_diffs.labels(diff.kind).inc()
            self.store.put_event(self._event(inp, live, diff))
            return diff
        except Exception:  # the shadow must never disturb the live decision
            self.errors += 1
            with swallowed(None, "shadow.metrics"):
                self.metrics.shadow_diffs.labels("error").inc()
            return None

    def _event(self, inp: DecisionInput, live: Decision, diff: ShadowDiff) -> dict[str, Any]:
        from s3.adapters.store_docs import signal_id

        sid = signal_id(inp.symbol, live.side, inp.t0_ms, live.config_rev)
        return {
            "event_id": store_docs.event_id("SHADOW_DIFF", sid, f"s{self.snap.rev}"),
            "kind": "SHADOW_DIFF",
            "symbol": inp.symbol,
            "ts": inp.now_ms,
            "detail": {
                "signal_id": sid,
                "t0": inp.t0_ms,
                "side": live.side,
                "kind": diff.kind,
                "kinds": list(diff.kinds),
                "live": diff.live,
                "shadow": diff.shadow,
            },
        }


# -- one shadow per engine: a field of the engine (`Engine.shadow`) ------------------------------


def install(engine: Any, shadow: Shadow) -> Shadow:
    """Make ``shadow`` decide beside ``engine`` (replaces a previous one)."""
    engine.shadow = shadow
    return shadow


def uninstall(engine: Any) -> Shadow | None:
    old: Shadow | None = getattr(engine, "shadow", None)
    engine.shadow = None
    return old


def current(engine: Any) -> Shadow | None:
    return getattr(engine, "shadow", None)


def observe(engine: Any, inp: DecisionInput, live: Decision) -> None:
    """A no-op unless a shadow is installed for ``engine`` (`Engine._decide_live` calls
    ``self.shadow.observe`` directly)."""
    s = current(engine)
    if s is not None:
        s.observe(inp, live)


def load_snapshot(spec: str, store: Any = None, settings: Any = None) -> BundleSnapshot:
    """A bundle directory, or ``store:<bundle_id>:<rev>``; ValueError with every reason if not."""
    if spec.startswith("store:"):
        from s3.config.reload import BundleDoc, compile_doc

        try:
            _, bundle_id, rev = spec.split(":")
            stored = store.get_bundle(bundle_id, int(rev)) if store is not None else None
        except ValueError:
            raise ValueError(f"{SHADOW_ENV}: {spec!r} is not store:<bundle_id>:<rev>") from None
        if stored is None:
            raise ValueError(f"{SHADOW_ENV}: no bundle {spec[6:]} in the store")
        doc = BundleDoc(stored.bundle_id, stored.rev, stored.checksum, dict(stored.files))
        snap, reasons = compile_doc(doc, settings)
        if snap is None:
            raise ValueError(f"{SHADOW_ENV}: {spec} does not compile: " + "; ".join(reasons))
        return snap
    from s3.config.bundle import load_dir

    if not Path(spec).is_dir():
        raise ValueError(f"{SHADOW_ENV}: {spec!r} is not a bundle directory")
    result = load_dir(spec, settings)
    if result.snapshot is None:
        reasons = [d.render(result.texts) for d in result.diagnostics if d.is_error]
        raise ValueError(f"{SHADOW_ENV}: {spec} does not compile:\n" + "\n".join(reasons))
    return result.snapshot


def install_from_env(engine: Any, store: Any, settings: Any = None) -> Shadow | None:
    """The hook in `Service.from_settings`: installs `S3_SHADOW_BUNDLE` when it is set.

    Raises:
        ValueError: the variable names a bundle that does not load (the service should not
            start with a shadow it was asked for and cannot run).
    """
    spec = os.environ.get(SHADOW_ENV, "").strip()
    if not spec:
        return None
    snap = load_snapshot(spec, store, settings)
    return install(engine, Shadow(snap, metrics=engine.metrics, store=store))
