"""The outcome parts of the HTML report (inline SVG, no script): equity curve and drawdown per
bundle, trades with their exits on the price series, the figures table, the attribution table
and the walk-forward windows."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from s3.replay.figures import equity_curve
from s3.replay.output import when
from s3.replay.replay import ReplayResult
from s3.replay.report import A_COLOR, B_COLOR, LINE_COLOR, Svg, esc, f1

EXIT_COLORS = {"tp": "#23914a", "sl": "#c0392b", "time": "#7f8c8d", "end": "#1d2329"}
MAX_TRADES_DRAWN = 600
MAX_POINTS = 1500


def _capital(r: ReplayResult) -> Decimal:
    return Decimal(repr(r.params.risk.fut_margin_usdt_max)) if r.params is not None else Decimal(0)


def equity_chart(
    results: Sequence[ReplayResult], colors: Sequence[str] = (A_COLOR, B_COLOR)
) -> str:
    """Equity (top) and drawdown from the running peak (bottom) at each exit, one line per bundle,
    on a common axis of exit order (time is not drawn to scale: tapes may have holes)."""
    curves = [equity_curve(r.trades, _capital(r)) for r in results]
    if not any(curves):
        return '<p class="note">no closed trade: no equity curve.</p>'
    width, height, left, top = 1100, 300, 70, 24
    eq_h, dd_h, gap = 170, 70, 24
    svg = Svg(width, height, label="equity curve and drawdown")
    svg.text(
        8,
        16,
        "Equity (USDT, at each exit) and drawdown from the running peak",
        weight="bold",
        size=12,
    )
    values = [float(e) for c in curves for _, e in c] + [float(_capital(r)) for r in results]
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    dds = []
    for c, r in zip(curves, results, strict=True):
        peak = float(_capital(r))
        row = []
        for _, e in c:
            peak = max(peak, float(e))
            row.append(peak - float(e))
        dds.append(row)
    dd_max = max((x for row in dds for x in row), default=0.0) or 1.0
    n_max = max(len(c) for c in curves)
    plot_w = width - left - 10

    def x_of(i: int, n: int) -> float:
        return left + plot_w * (i + 1) / max(n_max, 1)

    svg.rect(left, top, plot_w, eq_h, "#f7f8fa")
    svg.rect(left, top + eq_h + gap, plot_w, dd_h, "#fbf3f2")
    for c, dd, color, r in zip(curves, dds, colors[: len(results)], results, strict=True):
        start_y = top + eq_h * (1 - (float(_capital(r)) - lo) / span)
        pts = [f"{f1(left)},{f1(start_y)}"]
        dpts = [f"{f1(left)},{f1(top + eq_h + gap)}"]
        step = max(1, len(c) // MAX_POINTS)
        for i in range(0, len(c), step):
            y = top + eq_h * (1 - (float(c[i][1]) - lo) / span)
            pts.append(f"{f1(x_of(i, len(c)))},{f1(y)}")
            dpts.append(f"{f1(x_of(i, len(c)))},{f1(top + eq_h + gap + dd_h * dd[i] / dd_max)}")
        svg.add(
            f'<polyline points="{" ".join(pts)}" fill="none" stroke="{color}" stroke-width="1.6"><title>{esc(r.label)}</title></polyline>'
        )
        svg.add(
            f'<polyline points="{" ".join(dpts)}" fill="none" stroke="{color}" stroke-width="1.2"/>'
        )
    svg.text(left - 4, top + 10, f"{hi:,.2f}", anchor="end", size=9, color="#777")
    svg.text(left - 4, top + eq_h, f"{lo:,.2f}", anchor="end", size=9, color="#777")
    svg.text(left - 4, top + eq_h + gap + 10, "0", anchor="end", size=9, color="#777")
    svg.text(
        left - 4, top + eq_h + gap + dd_h, f"-{dd_max:,.2f}", anchor="end", size=9, color="#777"
    )
    svg.text(left, height - 4, f"{n_max} exits →", size=9, color="#555")
    return svg.render()


def trades_chart(result: ReplayResult) -> str:
    """Per symbol: the mid (events in tape order) and every trade, a line from its entry event to
    its exit event coloured by the exit (tp green, sl red, time grey, end black)."""
    out = []
    by_symbol: dict[str, list[tuple[int, float]]] = {}
    for o in result.outcomes:
        if o.mid is not None and o.ts is not None:
            by_symbol.setdefault(o.symbol, []).append((o.index, o.mid))
    trades = [t for t in result.trades if t.filled]
    drawn = trades[:MAX_TRADES_DRAWN]
    width, height, left, top, bottom = 1100, 220, 8, 24, 20
    plot_w, plot_h = width - 2 * left, height - top - bottom
    for symbol in sorted(by_symbol):
        pts = by_symbol[symbol]
        svg = Svg(width, height, label=f"{symbol}: trades and their exits")
        mine = [t for t in drawn if t.symbol == symbol]
        svg.text(
            left,
            16,
            f"{symbol}: trades on the mid ({len(mine)} drawn; ▲ entry, ● exit)",
            weight="bold",
            size=12,
        )
        pos = {idx: n for n, (idx, _) in enumerate(pts)}
        mids = [m for _, m in pts]
        lo, hi = min(mids), max(mids)
        span = hi - lo or max(hi * 1e-4, 1e-9)
        lo, hi = lo - 0.05 * span, hi + 0.05 * span
        n = len(pts)

        def xy(
            k: int, px: float, n: int = n, lo: float = lo, hi: float = hi
        ) -> tuple[float, float]:
            return left + plot_w * (k + 0.5) / n, top + plot_h * (1 - (px - lo) / (hi - lo))

        svg.rect(left, top, plot_w, plot_h, "#f7f8fa")
        step = max(1, n // MAX_POINTS)
        line = " ".join(
            f"{f1(x)},{f1(y)}" for x, y in (xy(k, pts[k][1]) for k in range(0, n, step))
        )
        svg.add(f'<polyline points="{line}" fill="none" stroke="{LINE_COLOR}" stroke-width="1"/>')
        for t in mine:
            if t.entry_px is None or t.exit_px is None:
                continue
            k0 = pos.get(t.index, 0)
            k1 = pos.get(t.release_after, n - 1)
            x0, y0 = xy(k0, float(t.entry_px))
            x1, y1 = xy(k1, float(t.exit_px))
            color = EXIT_COLORS.get(t.exit_reason, "#333")
            tip = esc(
                f"#{t.index} {t.side} {t.qty} @ {t.entry_px} ({when(t.entry_ts)}) -> {t.exit_reason} "
                f"@ {t.exit_px} ({when(t.exit_ts)}): P&L {t.pnl:.4f} USDT"
            )
            svg.line(x0, y0, x1, y1, color=color, width=1.2)
            up = t.side == "BUY"
            tri = (
                f"{f1(x0)},{f1(y0 - 5)} {f1(x0 - 4)},{f1(y0 + 2)} {f1(x0 + 4)},{f1(y0 + 2)}"
                if up
                else f"{f1(x0)},{f1(y0 + 5)} {f1(x0 - 4)},{f1(y0 - 2)} {f1(x0 + 4)},{f1(y0 - 2)}"
            )
            svg.add(f'<polygon points="{tri}" fill="{color}"><title>{tip}</title></polygon>')
            svg.add(
                f'<circle cx="{f1(x1)}" cy="{f1(y1)}" r="3" fill="{color}"><title>{tip}</title></circle>'
            )
        svg.text(left + 2, top + 11, f"{hi:,.2f}", size=9, color="#777")
        svg.text(left + 2, top + plot_h - 3, f"{lo:,.2f}", size=9, color="#777")
        out.append(svg.render())
    legend = " ".join(
        f'<span class="lg" style="color:{c}">● {name}</span>'
        for name, c in (
            ("take profit", EXIT_COLORS["tp"]),
            ("stop loss", EXIT_COLORS["sl"]),
            ("time stop", EXIT_COLORS["time"]),
            ("end of tape", EXIT_COLORS["end"]),
        )
    )
    more = (
        f'<p class="note">the first {MAX_TRADES_DRAWN} of {len(trades)} trades are drawn; --json has them all.</p>'
        if len(trades) > MAX_TRADES_DRAWN
        else ""
    )
    return f'<div class="legend">{legend}</div>' + "\n".join(out) + more


def figures_table(docs: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The figures of each bundle (label, figures doc): the run, per symbol, per symbol and side."""
    cols = (
        ("trades", "trades"),
        ("win_rate", "win rate"),
        ("pnl", "P&L"),
        ("fees", "fees"),
        ("funding", "funding"),
        ("expectancy", "expectancy"),
        ("profit_factor", "profit factor"),
        ("max_drawdown", "max DD"),
        ("time_under_water_ms", "under water (s)"),
        ("exposure", "exposure"),
        ("sharpe", "Sharpe/trade"),
        ("sortino", "Sortino/trade"),
        ("sqn", "SQN"),
    )
    head = (
        "<tr><th>bundle</th><th>group</th>"
        + "".join(f"<th>{esc(n)}</th>" for _, n in cols)
        + "<th>tp/sl/time/end</th></tr>"
    )
    rows = []
    for label, fig in docs:
        groups = [("all", fig["all"]), *fig["by_symbol"].items(), *fig["by_symbol_side"].items()]
        for name, g in groups:
            cells = []
            for k, _ in cols:
                v = g[k]
                if v is None:
                    text = "-"
                elif k in ("win_rate", "exposure"):
                    text = f"{100 * v:.1f}%"
                elif k == "time_under_water_ms":
                    text = f"{v / 1000:,.0f}"
                elif isinstance(v, float):
                    text = f"{v:.3f}"
                elif isinstance(v, str):
                    text = f"{float(v):,.4f}"
                else:
                    text = str(v)
                cells.append(f'<td class="n">{esc(text)}</td>')
            e = g["exits"]
            rows.append(
                f"<tr><td>{esc(label)}</td><td>{esc(name)}</td>{''.join(cells)}"
                f'<td class="n">{e["tp"]}/{e["sl"]}/{e["time"]}/{e["end"]}</td></tr>'
            )
    return f"<table>{head}{''.join(rows)}</table>"


def attribution_table(doc: dict[str, Any], label: str = "") -> str:
    rows = []
    for r in doc["rules"]:
        lo, hi = r["ci95"]
        verdict = "yes" if r["distinguishable_from_zero"] else "not distinguishable from zero"
        rows.append(
            f"<tr><td><code>{esc(r['rule_id'])}</code></td><td>{esc(r['title'])}</td>"
            f'<td class="n">{float(r["contribution"]):+.4f}</td><td class="n">[{lo:+.4f}, {hi:+.4f}]</td>'
            f'<td>{esc(verdict)}</td><td class="n">{r["d_trades"]:+d}</td>'
            f'<td class="n">{float(r["d_max_drawdown"]):+.4f}</td><td class="n">{r["fired"]}</td></tr>'
        )
    return (
        f'<p class="note">{esc(label)} contribution = P&L of the bundle minus P&L without the rule '
        f"(USDT); {esc(doc['method'])}; {doc['blocks']} blocks, {doc['resamples']} draws, seed "
        f"{doc['seed']}; full bundle {doc['full_trades']} trades, P&L {esc(doc['full_pnl'])}.</p>"
        "<table><tr><th>rule</th><th>title</th><th>contribution</th><th>95 % interval</th>"
        "<th>distinguishable</th><th>Δ trades</th><th>Δ max DD</th><th>fired</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def walk_forward_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        cells = "".join(
            f'<td>{esc(b["label"])}</td><td class="n">{b["trades"]}</td><td class="n">{float(b["pnl"]):+.4f}</td>'
            for b in r["bundles"]
        )
        d = ""
        if "d_pnl" in r:
            lo, hi = r["d_pnl_ci95"]
            d = f'<td class="n">{float(r["d_pnl"]):+.4f} [{lo:+.4f}, {hi:+.4f}]</td>'
        out.append(
            f'<tr><td class="n">{r["window"]}</td><td>{esc(when(r["first_ts"]))} → {esc(when(r["last_ts"]))}</td>'
            f'<td class="n">{r["events"]}</td>{cells}{d}</tr>'
        )
    return (
        '<table><tr><th>#</th><th>span (UTC)</th><th>events</th><th colspan="6">bundles: trades, P&L</th></tr>'
        + "".join(out)
        + "</table>"
    )


def outcomes_section(
    results: Sequence[ReplayResult],
    *,
    figures_docs: Sequence[tuple[str, dict[str, Any]]],
    attribution: Sequence[tuple[str, dict[str, Any]]] = (),
    walk: list[dict[str, Any]] | None = None,
    ab: dict[str, Any] | None = None,
) -> str:
    parts = []
    if ab is not None:
        lo, hi = ab["d_pnl_ci95"]
        verdict = (
            "distinguishable from zero"
            if ab["distinguishable_from_zero"]
            else "not distinguishable from zero"
        )
        parts.append(
            f"<h2>Outcomes A vs B</h2><p>Δ P&L (B − A) <b>{float(ab['d_pnl']):+.4f} USDT</b>, 95 % "
            f"interval [{lo:+.4f}, {hi:+.4f}]: {esc(verdict)} ({esc(ab['method'])}).</p>"
        )
    parts.append("<h2>Equity and drawdown</h2>" + equity_chart(results))
    parts.append("<h2>Figures</h2>" + figures_table(figures_docs))
    for r in results:
        parts.append(f"<h2>Trades of {esc(r.label)} on the price series</h2>" + trades_chart(r))
    if ab is not None and ab["rules"]:
        rows = "".join(
            f'<tr><td><code>{esc(x["rule_id"])}</code></td><td class="n">{x["a_trades"]}</td>'
            f'<td class="n">{float(x["a_pnl"]):+.4f}</td><td class="n">{x["b_trades"]}</td>'
            f'<td class="n">{float(x["b_pnl"]):+.4f}</td><td class="n">{float(x["d_pnl"]):+.4f}</td></tr>'
            for x in ab["rules"]
        )
        parts.append(
            "<h2>Per rule: P&L of the trades it fired in</h2><table><tr><th>rule</th><th>A trades</th>"
            f"<th>A P&L</th><th>B trades</th><th>B P&L</th><th>Δ</th></tr>{rows}</table>"
        )
    for label, doc in attribution:
        parts.append(
            f"<h2>What each rule earns ({esc(label)}): leave-one-out</h2>" + attribution_table(doc)
        )
    if walk:
        parts.append("<h2>Walk-forward windows</h2>" + walk_forward_table(walk))
    return "".join(parts)
