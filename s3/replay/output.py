"""Terminal summary, JSON document and decision snapshot of a replay (or of an A/B diff).

The snapshot is the stable, diff-friendly form of the full decision records: one JSON object
keyed ``"<index> <symbol> <ts> <side>"`` (index zero-padded, so keys sort in tape order), keys
sorted, two-space indent, UTF-8, a final newline: exactly the bytes syrupy's
`JSONSnapshotExtension` writes, so a `--snapshot` file and a syrupy snapshot of the same data are
the same file.
"""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from s3.replay.diff import Change, Diff, Summary
from s3.replay.replay import Outcome, ReplayResult

JSON_FORMAT = "s3-replay/1"
SNAPSHOT_FORMAT = "s3-replay-snapshot/1"


def _plain(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


def when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def tape_info(result: ReplayResult) -> dict[str, Any]:
    return {"source": result.tape_source, "events": len(result.outcomes)}


# -- snapshot -----------------------------------------------------------------------------------------
def record(o: Outcome) -> dict[str, Any]:
    if o.decision is None:
        return {"error": o.error}
    rec: dict[str, Any] = _plain(o.decision)
    if o.replayed:
        rec["replayed"] = True
    return rec


def snapshot_data(result: ReplayResult) -> dict[str, Any]:
    return {
        "format": SNAPSHOT_FORMAT,
        "bundle": {"bundle_id": result.bundle_id, "rev": result.rev, "checksum": result.checksum},
        "config": result.config.describe(),
        "tape": tape_info(result),
        "decisions": {o.key: record(o) for o in result.outcomes},
    }


def snapshot_text(data: Any) -> str:
    """The bytes syrupy's JSONSnapshotExtension writes for ``data`` (plain JSON values)."""
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def compact(result: ReplayResult) -> dict[str, str]:
    """One line per event (key -> verdict, reason, size, quantity, rules): a small snapshot that
    still shows every change of outcome."""
    out = {}
    for o in result.outcomes:
        d = o.decision
        if d is None:
            out[o.key] = f"error {o.error}"
            continue
        qty = f" qty {d.intent.qty} tp {d.intent.tp_px} sl {d.intent.sl_px}" if d.intent else ""
        rules = " ".join(d.rules_fired)
        again = " (replayed)" if o.replayed else ""
        out[o.key] = f"{d.decision} {d.reason_detail} x{d.size_mult:.6g}{qty} [{rules}]{again}"
    return out


# -- JSON ---------------------------------------------------------------------------------------------
def events_json(result: ReplayResult) -> list[dict[str, Any]]:
    out = []
    for o in result.outcomes:
        d = o.decision
        row: dict[str, Any] = {"index": o.index, "symbol": o.symbol, "ts": o.ts, "side": o.side}
        if d is None:
            row["error"] = o.error
        else:
            row |= {
                "decision": d.decision,
                "reason_detail": d.reason_detail,
                "rules_fired": list(d.rules_fired),
                "size_mult": d.size_mult,
                "intent_id": d.intent.intent_id if d.intent else None,
                "qty": str(d.intent.qty) if d.intent else None,
                "replayed": o.replayed,
            }
        out.append(row)
    return out


def capital(result: ReplayResult) -> Decimal:
    """The equity curve's start: the bundle's futures margin budget."""
    p = result.params
    return Decimal(repr(p.risk.fut_margin_usdt_max)) if p is not None else Decimal(0)


def outcomes_json(result: ReplayResult, *, trades: bool = True) -> dict[str, Any]:
    """The outcome simulation of a replay: its parameters, the figures, the trades and the
    equity curve (at each exit)."""
    from s3.replay.figures import equity_curve, figures, money

    p = result.params
    start = capital(result)
    doc: dict[str, Any] = {
        "tape_kind": result.tape_kind,
        "exits": {
            "time_stop_ms": p.exits.time_stop_ms,
            "market_slip_bps": p.exits.market_slip_bps,
            "fee_maker": str(p.sizing.fee_maker),
            "fee_taker": str(p.sizing.fee_taker),
        }
        if p is not None
        else None,
        "span": {"first_ts": result.first_ts, "last_ts": result.last_ts},
        "figures": figures(result.trades, result.first_ts, result.last_ts, start),
        "equity": [[ts, money(eq)] for ts, eq in equity_curve(result.trades, start)],
    }
    if trades:
        doc["trades"] = [t.to_json() for t in result.trades]
    return doc


def result_json(result: ReplayResult, *, events: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": JSON_FORMAT,
        "tape": tape_info(result),
        "config": result.config.describe(),
        "summary": _summary_with_checksum(result),
    }
    if result.exits:
        doc["outcomes"] = outcomes_json(result)
    if events:
        doc["events"] = events_json(result)
    return doc


def _summary_with_checksum(result: ReplayResult) -> dict[str, Any]:
    from s3.replay.diff import summarize

    s = summarize(result).to_json()
    s["bundle"]["checksum"] = result.checksum
    return s


def diff_json(a: ReplayResult, b: ReplayResult, d: Diff) -> dict[str, Any]:
    body = d.to_json()
    body["a"]["bundle"]["checksum"] = a.checksum
    body["b"]["bundle"]["checksum"] = b.checksum
    return {
        "format": JSON_FORMAT,
        "tape": tape_info(a),
        "config": a.config.describe(),
        "diff": body,
    }


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# -- terminal -----------------------------------------------------------------------------------------
def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:5.1f}%" if d else "    -"


def _size_line(s: Summary) -> str:
    if not s.size_mults:
        return "size multiplier of opens: (no opens)"
    xs = s.size_mults
    return (
        f"size multiplier of opens: min {min(xs):.3f}, median {statistics.median(xs):.3f}, "
        f"max {max(xs):.3f}"
    )


def _head(result: ReplayResult) -> list[str]:
    cfg = result.config.describe()
    return [
        f"tape {result.tape_path or '(memory)'}: {len(result.outcomes)} events"
        + (f" ({result.tape_source})" if result.tape_source else ""),
        f"hold {cfg['hold']}, budgets {cfg['budgets']}, clock {cfg['clock']}"
        + (f", health forced {cfg['health']}" if result.config.health else "")
        + (f", kill switch forced {cfg['kill_switch']}" if result.config.kill_switch else ""),
    ]


def summary_text(result: ReplayResult, s: Summary, *, rules: bool = True) -> str:
    lines = [f"replay with {s.label} ({result.checksum[:12]})", *_head(result)]
    errs = sum(s.errors.values())
    lines.append(
        f"{s.events} events: {s.decided} decided ({s.opens} open, {s.skips} skip), "
        f"{errs} not decided, {s.replayed} idempotent replays; {s.same_ms} events in the same "
        "millisecond as an earlier one of their symbol"
    )
    if s.errors:
        lines.append("not decided: " + ", ".join(f"{k} {v}" for k, v in s.errors.items()))
    lines.append("decisions by reason:")
    lines += [f"  {n:7d}  {r}" for r, n in s.by_reason.items()]
    if rules:
        lines.append(f"rules (hits of {s.evaluated} decisions that reached L1):")
        for r in s.rule_ids:
            h = s.rule_hits.get(r, 0)
            veto = f"  vetoed {s.vetoes[r]}" if r in s.vetoes else ""
            title = s.rule_titles.get(r, "")[:44]
            lines.append(f"  {r:<8} {title:<44} {h:7d} {_pct(h, s.evaluated)}{veto}")
    lines.append(
        f"rule coverage: {len(s.rule_ids) - len(s.never_fired)}/{len(s.rule_ids)} rules fired"
        + (f"; never fired: {', '.join(s.never_fired)}" if s.never_fired else "")
    )
    lines.append(_size_line(s))
    lines.append(
        f"risk (simulated): {s.reserved} reserved, {s.released} released, "
        f"{s.open_at_end} still open at the end; notional opened {s.notional_usdt} USDT"
    )
    return "\n".join(lines) + "\n"


def _ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    s = ms / 1000
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")


def _f(x: Any, nd: int = 2) -> str:
    return "-" if x is None else f"{float(x):.{nd}f}"


def figures_lines(fig: dict[str, Any]) -> list[str]:
    """The figures table: the run, each symbol, each symbol and side."""
    head = (
        f"  {'':<14}{'trades':>7}{'win%':>7}{'P&L':>11}{'fees':>10}{'funding':>9}"
        f"{'expect.':>9}{'PF':>6}{'maxDD':>9}{'expo%':>7}  tp/sl/time/end"
    )
    rows = [("all", fig["all"])]
    rows += list(fig["by_symbol"].items())
    rows += [(k, v) for k, v in fig["by_symbol_side"].items()]
    out = [head]
    for name, g in rows:
        ex = g["exits"]
        wr = "-" if g["win_rate"] is None else f"{100 * g['win_rate']:.1f}"
        expo = "-" if g["exposure"] is None else f"{100 * g['exposure']:.1f}"
        out.append(
            f"  {name:<14}{g['trades']:>7}{wr:>7}{_f(g['pnl']):>11}{_f(g['fees']):>10}"
            f"{_f(g['funding'], 3):>9}{_f(g['expectancy'], 3):>9}{_f(g['profit_factor']):>6}"
            f"{_f(g['max_drawdown']):>9}{expo:>7}  "
            f"{ex['tp']}/{ex['sl']}/{ex['time']}/{ex['end']}"
        )
    a = fig["all"]
    ratios = ", ".join(f"{k} {_f(a[k], 3)}" for k in ("sharpe", "sortino", "sqn"))
    out.append(
        f"  per trade: {ratios}; under water {_ms(a['time_under_water_ms'])} "
        f"(longest {_ms(a['longest_under_water_ms'])}); avg hold {_ms(a['avg_duration_ms'])}"
        + (f"; {a['unfilled']} maker entries unfilled" if a["unfilled"] else "")
        + (f"; only {a['trades']} trades: too few to read" if a["small_sample"] else "")
    )
    return out


def outcomes_text(result: ReplayResult) -> str:
    doc = outcomes_json(result, trades=False)
    e = doc["exits"]
    lines = [
        f"outcomes ({result.tape_kind} tape; time stop {_ms(e['time_stop_ms'])}, market fills "
        f"+{e['market_slip_bps']:g} bps, fees maker {e['fee_maker']} taker {e['fee_taker']}; "
        f"P&L in USDT from {doc['figures']['capital']}):",
        *figures_lines(doc["figures"]),
    ]
    return "\n".join(lines) + "\n"


def attribution_text(label: str, doc: dict[str, Any], elapsed_s: float) -> str:
    lines = [
        f"what each rule earns under {label} (leave-one-out; contribution = P&L with the rule - "
        f"without it, USDT; 95 % interval: {doc['blocks']} time blocks, {doc['resamples']} "
        f"draws, seed {doc['seed']}; {elapsed_s:.1f} s):",
        f"  {'rule':<8} {'contribution':>13} {'95 % interval':>25} {'Δtrades':>8} "
        f"{'ΔmaxDD':>9} {'fired':>7}",
    ]
    for r in doc["rules"]:
        lo, hi = r["ci95"]
        flag = "" if r["distinguishable_from_zero"] else "  not distinguishable from zero"
        if r["contribution"] == "0" and lo == hi == 0:
            flag = "  no effect on this tape"
        lines.append(
            f"  {r['rule_id']:<8} {float(r['contribution']):>+13.4f} "
            f"{f'[{lo:+.4f}, {hi:+.4f}]':>25} {r['d_trades']:>+8d} "
            f"{float(r['d_max_drawdown']):>+9.4f} {r['fired']:>7}{flag}"
        )
    return "\n".join(lines) + "\n"


def _change_line(c: Change) -> str:
    head = f"  #{c.index:06d} {c.symbol} {when(c.ts)} {c.side or '-':<4}"
    a, b = c.a, c.b
    if {"open_to_skip", "skip_to_open", "reason", "error"} & set(c.kinds):
        ra = a.get("reason_detail") or a.get("error")
        rb = b.get("reason_detail") or b.get("error")
        text = f"{ra} -> {rb}"
        sentence = b.get("sentence") if b.get("decision") == "skip" else a.get("sentence")
        if sentence:
            text += f"  ({sentence})"
    else:
        parts = []
        if "size" in c.kinds:
            parts.append(
                f"qty {a.get('qty')} -> {b.get('qty')}, size x{a['size_mult']:.4g} -> "
                f"x{b['size_mult']:.4g}"
            )
        if "tp_sl" in c.kinds:
            parts.append(
                f"TP {a.get('tp_px')} -> {b.get('tp_px')}, SL {a.get('sl_px')} -> {b.get('sl_px')}"
            )
        text = "; ".join(parts) or "rules only"
    rules = ""
    if c.gained or c.lost:
        rules = "  [" + " ".join([*(f"+{r}" for r in c.gained), *(f"-{r}" for r in c.lost)]) + "]"
    return f"{head} {text}{rules}  ({c.cause})"


def diff_text(a: ReplayResult, b: ReplayResult, d: Diff, *, limit: int = 20) -> str:
    sa, sb = d.a, d.b
    lines = [
        f"A/B replay: A = {sa.label} ({a.checksum[:12]}), B = {sb.label} ({b.checksum[:12]})",
        *_head(a),
    ]
    rows = [
        ("decided", sa.decided, sb.decided),
        ("open", sa.opens, sb.opens),
        ("skip", sa.skips, sb.skips),
        ("not decided", sum(sa.errors.values()), sum(sb.errors.values())),
        ("reached L1", sa.evaluated, sb.evaluated),
    ]
    reasons = list(dict.fromkeys([*sa.by_reason, *sb.by_reason]))
    rows += [(f"  {r}", sa.by_reason.get(r, 0), sb.by_reason.get(r, 0)) for r in reasons]
    w = max(24, *(len(name) + 1 for name, _, _ in rows))
    lines.append(f"{'':{w}}{'A':>9}{'B':>9}{'B-A':>8}")
    lines += [f"{name:<{w}}{x:9d}{y:9d}{y - x:+8d}" for name, x, y in rows]
    counts = {
        k: d.count(k)
        for k in ("open_to_skip", "skip_to_open", "reason", "size", "tp_sl", "rules", "error")
    }
    lines.append(
        f"changed events: {len(d.changes)} (open->skip {counts['open_to_skip']}, skip->open "
        f"{counts['skip_to_open']}, other reason {counts['reason']}, size {counts['size']}, "
        f"TP/SL {counts['tp_sl']}, rules fired {counts['rules']}, errors {counts['error']})"
    )
    causes: dict[str, int] = {}
    for c in d.changes:
        causes[c.cause] = causes.get(c.cause, 0) + 1
    if causes:
        lines.append("by cause: " + ", ".join(f"{k} {v}" for k, v in sorted(causes.items())))
    flows = d.reason_flows()
    if flows:
        lines.append("reason changes (A -> B):")
        lines += [f"  {n:7d}  {f}" for f, n in flows.items()]
    for title, kind in (
        ("opens that became skips", "open_to_skip"),
        ("skips that became opens", "skip_to_open"),
    ):
        items = d.flips(kind)
        if items:
            more = f" (first {limit} of {len(items)})" if len(items) > limit else ""
            lines.append(f"{title}{more}:")
            lines += [_change_line(c) for c in items[:limit]]
    minor = [c for c in d.changes if not c.material]
    if minor:
        lines.append(
            f"{len(minor)} events changed only their skip reason or the rules fired (same "
            "decision, size, SL and TP): not listed (--json has them)"
        )
    sized = [c for c in d.changes if {"size", "tp_sl"} & set(c.kinds)]
    if sized:
        more = f" (first {limit} of {len(sized)})" if len(sized) > limit else ""
        lines.append(f"size and TP/SL changes of opens{more}:")
        lines += [_change_line(c) for c in sized[:limit]]
    deltas = [r for r in d.rule_deltas() if r["delta"] or r["a"] is None or r["b"] is None]
    lines.append("rule hits A -> B (changed rules only):" if deltas else "rule hits: unchanged")
    for r in deltas:
        a_h = "-" if r["a"] is None else str(r["a"])
        b_h = "-" if r["b"] is None else str(r["b"])
        lines.append(f"  {r['rule_id']:<8} {a_h:>7} -> {b_h:<7} ({r['delta']:+d})")
    lines.append(
        f"rule coverage: A {len(sa.rule_ids) - len(sa.never_fired)}/{len(sa.rule_ids)}, "
        f"B {len(sb.rule_ids) - len(sb.never_fired)}/{len(sb.rule_ids)}"
    )
    lines.append("never fired under A: " + (", ".join(sa.never_fired) or "(none)"))
    lines.append("never fired under B: " + (", ".join(sb.never_fired) or "(none)"))
    return "\n".join(lines) + "\n"
