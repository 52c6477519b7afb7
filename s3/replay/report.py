"""The HTML report of a replay or an A/B diff: one self-contained file, charts as inline SVG, no
JavaScript, no external resource (it opens offline and prints).

Charts: decisions over the price series (one panel per symbol and continuous stretch of the
tape), hit rate per rule, and the distribution of the size multiplier of opens. Tables: counts,
reasons, the events that changed, rules that never fired. The output is deterministic (no clock,
fixed number formats), so a report can be diffed too.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from s3.replay.diff import SIZE_BINS, Change, Diff, Summary, summarize
from s3.replay.output import when
from s3.replay.replay import Outcome, ReplayResult

A_COLOR = "#3566b0"
B_COLOR = "#e0861b"
BUY_COLOR = "#23914a"
SELL_COLOR = "#c0392b"
SKIP_COLOR = "#a6acb3"
LINE_COLOR = "#4a5560"
GAP_MS = 5 * 60_000
"""A pause longer than this between two events of a symbol starts a new panel."""
MAX_LINE_POINTS = 1500
MAX_MARKERS = 4000
MAX_TABLE_ROWS = 300


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def f1(x: float) -> str:
    return f"{x:.1f}"


@dataclass
class Svg:
    width: int
    height: int
    parts: list[str] = field(default_factory=list)
    label: str = ""

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(
        self,
        x: float,
        y: float,
        s: str,
        *,
        anchor: str = "start",
        size: int = 11,
        color: str = "#333",
        weight: str = "normal",
    ) -> None:
        self.add(
            f'<text x="{f1(x)}" y="{f1(y)}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{color}" font-weight="{weight}">{esc(s)}</text>'
        )

    def rect(self, x: float, y: float, w: float, h: float, color: str, title: str = "") -> None:
        t = f"<title>{esc(title)}</title>" if title else ""
        self.add(
            f'<rect x="{f1(x)}" y="{f1(y)}" width="{f1(max(w, 0))}" height="{f1(max(h, 0))}" '
            f'fill="{color}">{t}</rect>'
        )

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        color: str = "#ccc",
        dash: str = "",
        width: float = 1,
    ) -> None:
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(
            f'<line x1="{f1(x1)}" y1="{f1(y1)}" x2="{f1(x2)}" y2="{f1(y2)}" stroke="{color}" '
            f'stroke-width="{width}"{d}/>'
        )

    def render(self) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
            f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" role="img" '
            f'aria-label="{esc(self.label)}" font-family="system-ui, sans-serif">'
            + "".join(self.parts)
            + "</svg>"
        )


# -- decisions over the price series ---------------------------------------------------------------
def _segments(outs: list[Outcome]) -> list[list[Outcome]]:
    segs: list[list[Outcome]] = []
    last: int | None = None
    for o in outs:
        if o.ts is None or o.mid is None:
            continue
        if last is None or o.ts - last > GAP_MS or o.ts < last:
            segs.append([])
        segs[-1].append(o)
        last = o.ts
    return segs


def _marker(x: float, y: float, o: Outcome) -> str:
    d = o.decision
    if d is None:
        return ""
    tip = esc(f"#{o.index} {when(o.ts)} {o.side or '-'} {d.decision} {d.reason_detail}")
    if d.decision == "open":
        color = BUY_COLOR if d.side == "BUY" else SELL_COLOR
        if d.side == "BUY":
            pts = f"{f1(x)},{f1(y - 6)} {f1(x - 4.5)},{f1(y + 2)} {f1(x + 4.5)},{f1(y + 2)}"
        else:
            pts = f"{f1(x)},{f1(y + 6)} {f1(x - 4.5)},{f1(y - 2)} {f1(x + 4.5)},{f1(y - 2)}"
        return f'<polygon points="{pts}" fill="{color}"><title>{tip}</title></polygon>'
    return (
        f'<circle cx="{f1(x)}" cy="{f1(y)}" r="1.8" fill="{SKIP_COLOR}"><title>{tip}</title>'
        "</circle>"
    )


def price_chart(result: ReplayResult, changes: Sequence[Change] = ()) -> str:
    """One SVG per symbol: the mid, A's opens (▲ buy, ▼ sell), skips (dots), and with an A/B diff
    the events whose verdict changed (rings: orange open→skip, blue skip→open)."""
    flips = {c.index: c for c in changes if {"open_to_skip", "skip_to_open"} & set(c.kinds)}
    by_symbol: dict[str, list[Outcome]] = {}
    for o in result.outcomes:
        if not o.replayed:
            by_symbol.setdefault(o.symbol, []).append(o)
    out = []
    total_markers = sum(len(v) for v in by_symbol.values())
    keep_skips = total_markers <= MAX_MARKERS
    opens = sum(
        1 for o in result.outcomes if o.decision is not None and o.decision.decision == "open"
    )
    stride = max(1, math.ceil(opens / MAX_MARKERS))  # a huge tape: every stride-th open
    n_open = 0
    for symbol in sorted(by_symbol):
        segs = _segments(by_symbol[symbol])
        if not segs:
            continue
        width, height, top, bottom, left, gap = 1100, 230, 26, 34, 8, 14
        n_points = sum(len(s) for s in segs)
        usable = width - 2 * left - gap * (len(segs) - 1)
        svg = Svg(width, height, label=f"{symbol}: decisions over the mid price")
        svg.text(
            left,
            16,
            f"{symbol}: mid and decisions ({n_points} events, "
            f"{len(segs)} stretch{'es' if len(segs) != 1 else ''}"
            + (f"; one open in {stride} drawn" if stride > 1 else "")
            + ("" if keep_skips else "; skips not drawn")
            + ")",
            weight="bold",
            size=12,
        )
        x0 = float(left)
        plot_h = height - top - bottom
        for seg in segs:
            seg_w = usable * len(seg) / n_points
            mids = [o.mid for o in seg if o.mid is not None]
            raw_lo, raw_hi = min(mids), max(mids)
            span = raw_hi - raw_lo or max(abs(raw_hi) * 1e-4, 1e-9)
            lo, hi = raw_lo - 0.08 * span, raw_hi + 0.08 * span

            n = len(seg)
            xs = [x0 + seg_w * (i + 0.5) / n for i in range(n)]
            ys = [top + plot_h * (1 - ((o.mid or lo) - lo) / (hi - lo)) for o in seg]

            svg.rect(x0, top, seg_w, plot_h, "#f7f8fa")
            step = max(1, len(seg) // MAX_LINE_POINTS)
            pts = []
            for i in range(0, n, step):
                pts.append(f"{f1(xs[i])},{f1(ys[i])}")
            svg.add(
                f'<polyline points="{" ".join(pts)}" fill="none" stroke="{LINE_COLOR}" '
                'stroke-width="1.2"/>'
            )
            for x, y, o in zip(xs, ys, seg, strict=True):
                d = o.decision
                if d is not None and d.decision == "open":
                    if n_open % stride == 0:
                        svg.add(_marker(x, y, o))
                    n_open += 1
                elif d is not None and keep_skips:
                    svg.add(_marker(x, y, o))
                c = flips.get(o.index)
                if c is not None:
                    color = B_COLOR if "open_to_skip" in c.kinds else A_COLOR
                    tip = esc(
                        f"#{o.index}: A {c.a.get('reason_detail')} -> B {c.b.get('reason_detail')}"
                    )
                    svg.add(
                        f'<circle cx="{f1(x)}" cy="{f1(y)}" r="7" fill="none" stroke="{color}" '
                        f'stroke-width="2"><title>{tip}</title></circle>'
                    )
            svg.text(x0 + 2, top + 11, f"{raw_hi:,.2f}", size=9, color="#777")
            svg.text(x0 + 2, top + plot_h - 3, f"{raw_lo:,.2f}", size=9, color="#777")
            svg.text(x0, height - bottom + 14, when(seg[0].ts), size=9, color="#555")
            svg.text(
                x0 + seg_w,
                height - bottom + 26,
                when(seg[-1].ts)[11:] + " UTC",
                size=9,
                color="#555",
                anchor="end",
            )
            x0 += seg_w + gap
        out.append(svg.render())
    return "\n".join(out)


def legend(ab: bool) -> str:
    items = [
        f'<span class="lg"><svg width="12" height="12"><polygon points="6,1 1,11 11,11" '
        f'fill="{BUY_COLOR}"/></svg> open BUY</span>',
        f'<span class="lg"><svg width="12" height="12"><polygon points="6,11 1,1 11,1" '
        f'fill="{SELL_COLOR}"/></svg> open SELL</span>',
        f'<span class="lg"><svg width="12" height="12"><circle cx="6" cy="6" r="2.5" '
        f'fill="{SKIP_COLOR}"/></svg> skip</span>',
    ]
    if ab:
        items += [
            f'<span class="lg"><svg width="16" height="16"><circle cx="8" cy="8" r="6" '
            f'fill="none" stroke="{B_COLOR}" stroke-width="2"/></svg> open under A, skip under B'
            "</span>",
            f'<span class="lg"><svg width="16" height="16"><circle cx="8" cy="8" r="6" '
            f'fill="none" stroke="{A_COLOR}" stroke-width="2"/></svg> skip under A, open under B'
            "</span>",
        ]
    return '<div class="legend">' + " ".join(items) + "</div>"


# -- rules ------------------------------------------------------------------------------------------------
def rules_chart(sums: Sequence[Summary]) -> str:
    """Hit rate per rule (hits / decisions that reached L1), one bar per bundle."""
    ids = list(dict.fromkeys(r for s in sums for r in s.rule_ids))
    titles: dict[str, str] = {}
    for s in sums:
        titles |= s.rule_titles
    bar_h, row_gap = 9, 7
    row_h = bar_h * len(sums) + row_gap
    label_w, width = 330, 1100
    plot_w = width - label_w - 90
    height = 40 + row_h * len(ids) + 10
    top_rate = max((s.hit_rate(r) for s in sums for r in ids), default=0.0) or 1.0
    scale = min(1.0, round(top_rate + 0.05, 1) or 1.0)
    svg = Svg(width, height, label="hit rate per rule")
    colors = (A_COLOR, B_COLOR)
    for k in range(0, 11):
        v = scale * k / 10
        x = label_w + plot_w * k / 10
        svg.line(x, 28, x, height - 8, "#e4e6ea")
        svg.text(x, 22, f"{100 * v:.0f}%", anchor="middle", size=9, color="#777")
    for i, r in enumerate(ids):
        y = 34 + i * row_h
        title = titles.get(r, "")
        svg.text(
            label_w - 8, y + bar_h * len(sums) / 2 + 4, f"{r}  {title[:44]}", anchor="end", size=10
        )
        for j, s in enumerate(sums):
            if r not in s.rule_ids:
                continue
            rate = s.hit_rate(r)
            hits = s.rule_hits.get(r, 0)
            w = plot_w * rate / scale
            yy = y + j * bar_h
            svg.rect(
                label_w,
                yy,
                w,
                bar_h - 1,
                colors[j],
                f"{s.label}: {r} fired {hits} of {s.evaluated} ({100 * rate:.1f}%)",
            )
            if hits == 0:
                svg.text(label_w + 3, yy + bar_h - 1, "never", size=8, color="#b00")
            else:
                svg.text(
                    label_w + w + 4,
                    yy + bar_h - 1,
                    f"{100 * rate:.1f}% ({hits})",
                    size=8,
                    color="#444",
                )
    return svg.render()


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``raw`` (and at least 1: counts are whole)."""
    if raw <= 1:
        return 1.0
    base = 10.0 ** math.floor(math.log10(raw))
    return next(m * base for m in (1.0, 2.0, 5.0, 10.0) if m * base >= raw)


def size_chart(sums: Sequence[Summary]) -> str:
    """Opens per bin of the final size multiplier (after clamp and health)."""
    width, height, left, bottom, top = 700, 260, 50, 40, 20
    bins = len(SIZE_BINS)
    most = max((c for s in sums for c in s.size_hist), default=0) or 1
    step = _nice_step(most / 4)
    peak = step * math.ceil(most / step)
    plot_w, plot_h = width - left - 20, height - top - bottom
    svg = Svg(width, height, label="size multiplier distribution of opens")
    group_w = plot_w / bins
    bar_w = (group_w - 8) / max(1, len(sums))
    colors = (A_COLOR, B_COLOR)
    for k in range(round(peak / step) + 1):
        v = step * k
        y = top + plot_h * (1 - v / peak)
        svg.line(left, y, width - 20, y, "#e4e6ea")
        svg.text(left - 6, y + 3, f"{v:g}", anchor="end", size=9, color="#777")
    for i in range(bins):
        x = left + i * group_w + 4
        lo = SIZE_BINS[i]
        name = f"≥{lo:g}" if i == bins - 1 else f"{lo:g}–{SIZE_BINS[i + 1]:g}"
        svg.text(
            left + i * group_w + group_w / 2, height - bottom + 14, name, anchor="middle", size=9
        )
        for j, s in enumerate(sums):
            n = s.size_hist[i] if i < len(s.size_hist) else 0
            h = plot_h * n / peak
            svg.rect(
                x + j * bar_w,
                top + plot_h - h,
                bar_w - 1,
                h,
                colors[j],
                f"{s.label}: {n} opens with size_mult in {name}",
            )
            if n:
                svg.text(
                    x + j * bar_w + bar_w / 2,
                    top + plot_h - h - 3,
                    str(n),
                    anchor="middle",
                    size=8,
                    color="#444",
                )
    svg.text(
        left + plot_w / 2,
        height - 6,
        "final size multiplier (rules × model, clamped, × health)",
        anchor="middle",
        size=10,
        color="#555",
    )
    return svg.render()


# -- page -------------------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1140px;
color:#1d2329;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #e4e6ea;
padding-bottom:4px}.sub{color:#5b6570;font-size:13px;margin-bottom:14px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #e4e6ea;border-radius:8px;
padding:10px 14px;min-width:120px}.card b{display:block;font-size:22px}.card span{color:#5b6570;
font-size:12px}.a{color:#3566b0}.b{color:#e0861b}.neg{color:#c0392b}.pos{color:#23914a}
table{border-collapse:collapse;font-size:12px;margin:6px 0}td,th{border-bottom:1px solid #eef0f2;
padding:3px 8px;text-align:left;vertical-align:top}th{background:#f7f8fa}td.n{text-align:right;
font-variant-numeric:tabular-nums}.legend{font-size:12px;color:#444;margin:4px 0 8px}
.lg{margin-right:16px;white-space:nowrap}.lg svg{vertical-align:middle}code{font-size:12px}
.note{color:#5b6570;font-size:12px}
"""


def _card(value: object, label: str, cls: str = "") -> str:
    return f'<div class="card"><b class="{cls}">{esc(value)}</b><span>{esc(label)}</span></div>'


def _reasons_table(sums: Sequence[Summary]) -> str:
    reasons = list(dict.fromkeys(r for s in sums for r in s.by_reason))
    head = "".join(f"<th>{esc(s.label)}</th>" for s in sums)
    rows = []
    for r in reasons:
        cells = "".join(f'<td class="n">{s.by_reason.get(r, 0)}</td>' for s in sums)
        rows.append(f"<tr><td><code>{esc(r)}</code></td>{cells}</tr>")
    for code in dict.fromkeys(c for s in sums for c in s.errors):
        cells = "".join(f'<td class="n">{t.errors.get(code, 0)}</td>' for t in sums)
        rows.append(f"<tr><td>not decided: <code>{esc(code)}</code></td>{cells}</tr>")
    return f"<table><tr><th>reason_detail</th>{head}</tr>{''.join(rows)}</table>"


def _changes_table(d: Diff) -> str:
    rows = []
    listed = d.material()
    for c in listed[:MAX_TABLE_ROWS]:
        a, b = c.a, c.b
        ra = a.get("reason_detail") or a.get("error")
        rb = b.get("reason_detail") or b.get("error")
        detail = []
        if "size" in c.kinds:
            detail.append(
                f"qty {a.get('qty')} → {b.get('qty')} (×{a['size_mult']:.4g} → "
                f"×{b['size_mult']:.4g})"
            )
        if "tp_sl" in c.kinds:
            detail.append(
                f"TP {a.get('tp_px')} → {b.get('tp_px')}, SL {a.get('sl_px')} → {b.get('sl_px')}"
            )
        if c.gained or c.lost:
            detail.append(" ".join([*(f"+{r}" for r in c.gained), *(f"−{r}" for r in c.lost)]))
        rows.append(
            f'<tr><td class="n">{c.index}</td><td>{esc(c.symbol)}</td><td>{esc(when(c.ts))}</td>'
            f"<td>{esc(c.side or '-')}</td><td>{esc(', '.join(c.kinds))}</td>"
            f"<td><code>{esc(ra)}</code> → <code>{esc(rb)}</code></td>"
            f"<td>{esc('; '.join(detail))}</td><td>{esc(c.cause)}</td></tr>"
        )
    more = (
        f'<p class="note">first {MAX_TABLE_ROWS} of {len(listed)} changed events; '
        "the JSON output (--json) has all of them.</p>"
        if len(listed) > MAX_TABLE_ROWS
        else ""
    )
    rest = len(d.changes) - len(listed)
    if rest:
        more += (
            f'<p class="note">{rest} more events changed only their skip reason or the rules '
            "fired (same decision, size, SL and TP): not listed; --json has them.</p>"
        )
    return (
        "<table><tr><th>#</th><th>symbol</th><th>time (UTC)</th><th>side</th><th>change</th>"
        "<th>reason A → B</th><th>detail</th><th>cause</th></tr>"
        + "".join(rows)
        + "</table>"
        + more
    )


def _page(title: str, sub: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{esc(title)}</h1><div class="sub">{sub}</div>{body}</body></html>\n'
    )


def _sub(result: ReplayResult) -> str:
    cfg = result.config.describe()
    return esc(
        f"tape {result.tape_path or '(memory)'} · {len(result.outcomes)} events · "
        f"{result.tape_source} · hold {cfg['hold']} · budgets {cfg['budgets']} · "
        f"clock {cfg['clock']}"
    )


def _never(s: Summary) -> str:
    if not s.never_fired:
        return f"<p>{esc(s.label)}: every rule fired at least once.</p>"
    items = ", ".join(
        f'<code>{esc(r)}</code> <span class="note">{esc(s.rule_titles.get(r, ""))}</span>'
        for r in s.never_fired
    )
    return f"<p>{esc(s.label)}: {items}</p>"


def html_report(result: ReplayResult, extra: str = "") -> str:
    s = summarize(result)
    cards = "".join(
        [
            _card(s.events, "events"),
            _card(s.opens, "open"),
            _card(s.skips, "skip"),
            _card(sum(s.errors.values()), "not decided"),
            _card(f"{100 * s.coverage:.0f}%", "rule coverage"),
            _card(s.reserved, "reservations"),
        ]
    )
    body = (
        f'<div class="cards">{cards}</div>'
        f"<h2>Decisions over the price series</h2>{legend(False)}{price_chart(result)}"
        f'<h2>Hit rate per rule</h2><p class="note">hits ÷ the {s.evaluated} decisions that '
        f"passed the gates (L1 ran)</p>{rules_chart([s])}"
        f"<h2>Size multiplier of opens</h2>{size_chart([s])}"
        f"<h2>Decisions by reason</h2>{_reasons_table([s])}"
        f"<h2>Rules that never fired</h2>{_never(s)}"
        f"{extra}"
    )
    return _page(f"Replay: {s.label}", _sub(result), body)


def html_diff(a: ReplayResult, b: ReplayResult, d: Diff, extra: str = "") -> str:
    sa, sb = d.a, d.b

    def delta(x: int, y: int) -> str:
        cls = "pos" if y > x else ("neg" if y < x else "")
        return f'<span class="{cls}">{y - x:+d}</span>'

    cards = "".join(
        [
            _card(sa.events, "events"),
            f'<div class="card"><b><span class="a">{sa.opens}</span> → <span class="b">'
            f"{sb.opens}</span></b><span>open A → B ({delta(sa.opens, sb.opens)})</span></div>",
            _card(len(d.changes), "changed events"),
            _card(d.count("open_to_skip"), "open → skip", "b"),
            _card(d.count("skip_to_open"), "skip → open", "a"),
            _card(d.count("size") + d.count("tp_sl"), "size or TP/SL changed"),
        ]
    )
    body = (
        f'<p><span class="a">■ A = {esc(sa.label)}</span> ({esc(a.checksum[:12])}) &nbsp; '
        f'<span class="b">■ B = {esc(sb.label)}</span> ({esc(b.checksum[:12])})</p>'
        f'<div class="cards">{cards}</div>'
        f"<h2>Decisions over the price series (A, with the changes under B)</h2>{legend(True)}"
        f"{price_chart(a, d.changes)}"
        f'<h2>Hit rate per rule</h2><p class="note">hits ÷ decisions that passed the gates: '
        f"A {sa.evaluated}, B {sb.evaluated}</p>{rules_chart([sa, sb])}"
        f"<h2>Size multiplier of opens</h2>{size_chart([sa, sb])}"
        f"<h2>Decisions by reason</h2>{_reasons_table([sa, sb])}"
        f"<h2>Events that changed</h2>{_changes_table(d)}"
        f"<h2>Rules that never fired</h2>{_never(sa)}{_never(sb)}"
        f"{extra}"
    )
    return _page(f"A/B replay: {sa.label} vs {sb.label}", _sub(a), body)
