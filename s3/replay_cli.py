"""`s3 record`, `s3 replay` and `s3 tape sample|synth|info` (see docs/replay.md).

Exit codes: 0 done; 1 a bundle does not build, or `--check-live` found a decision the replay does
not reproduce; 2 usage errors (a file that does not exist, an unreadable tape).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from s3 import ops_cli


class UsageError(ops_cli.UsageError):
    """Caught by `s3.cli.main` (exit 2), like the other subcommands' usage errors."""


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _out(text: str) -> None:
    sys.stdout.write(text)


def _progress(quiet: bool, description: str) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
        transient=True,
    )


# -- s3 record ----------------------------------------------------------------------------------------------
def record(args: argparse.Namespace) -> int:
    from s3.adapters.redis_client import connect
    from s3.adapters.redis_keys import Keys
    from s3.replay import record as rec

    settings = ops_cli._settings()
    addresses = args.redis or settings.redis_addresses
    if not addresses:
        raise UsageError(
            "no Redis to record from: pass --redis HOST:PORT or set S3_REDIS_ADDRESSES"
        )
    prefix = settings.redis_prefix if args.prefix is None else args.prefix
    client, keys = connect(addresses)
    keys = Keys(prefix=prefix, risk_tag=keys.risk_tag)
    symbols = [
        s.strip().upper() for s in (args.symbols or settings.symbols).split(",") if s.strip()
    ]
    store = None
    if args.decisions:
        from s3.service import open_store

        store = open_store(settings)
    source = f"redis {addresses}" + (f" prefix {prefix!r}" if prefix else "")
    try:
        with _progress(args.quiet, "recording feat:events") as progress:
            task = progress.add_task("record", total=None)

            def tick(done: int, total: int | None) -> None:
                progress.update(task, completed=done, total=total)

            if args.follow:
                stats = rec.follow(
                    client,
                    keys,
                    symbols,
                    args.out,
                    duration_s=args.duration,
                    count=args.count,
                    store=store,
                    source=source,
                    tick=tick,
                )
            else:
                stats = rec.backfill(
                    client,
                    keys,
                    symbols,
                    args.out,
                    since=args.since,
                    until=args.until,
                    count=args.count,
                    store=store,
                    source=source,
                    tick=tick,
                )
    except KeyboardInterrupt:
        _err("s3 record: interrupted; the tape holds what was written so far")
        return 0
    finally:
        client.close()
    per = ", ".join(f"{s} {n}" for s, n in stats.by_symbol.items())
    _out(
        f"recorded {stats.events} events ({per}), {stats.states} state records, "
        f"{stats.decisions} live decisions to {args.out}\n"
    )
    return 0


# -- s3 replay ----------------------------------------------------------------------------------------------
def _bundle(path: str) -> Any:
    from s3.config.bundle import load_dir

    if not Path(path).is_dir():
        raise UsageError(f"bundle '{path}' is not a directory")
    result = load_dir(path, ops_cli._settings())
    if result.snapshot is None:
        for d in result.diagnostics:
            _err(d.render(result.texts))
        _err(f"{path}: the bundle has errors (above); nothing was replayed")
    return result.snapshot


def _tape(path: str, limit: int) -> Any:
    from s3.replay.tape import TapeError, load

    if not Path(path).is_file():
        raise UsageError(f"tape '{path}' does not exist")
    try:
        return load(path, limit=limit)
    except (TapeError, OSError, EOFError) as exc:
        raise UsageError(str(exc)) from None


def _write(path: str, text: str) -> None:
    if path == "-":
        _out(text)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def _unknown_keys(tape: Any, snap: Any, *, strict: bool) -> bool:
    """Warn about feature keys the bundle does not read (an error under --strict)."""
    from s3.unknown_keys import warnings_for

    found = warnings_for(
        (e.features for e in tape.events if e.features), snap.ruleset.schema.features
    )
    for w in found:
        _err(f"{'error' if strict else 'warning'}: {w}")
    return bool(found) and strict


def _snapshot_check(args: argparse.Namespace, data: dict[str, Any], to_stdout: bool) -> int:
    """--check: a decision-level diff against the stored snapshot, exit 1 when a decision
    changed; --update: rewrite it (and show what changed)."""
    from s3.replay import output, snapshot_check

    if args.snapshot == "-":
        raise UsageError("--check/--update need a snapshot file, not '-'")
    stored = snapshot_check.load(args.snapshot)
    if stored is None and args.check:
        raise UsageError(f"no snapshot at {args.snapshot}: create it with --update")
    fresh = snapshot_check.parse(output.snapshot_text(data))  # what the file would hold
    diff = snapshot_check.compare(stored or {}, fresh) if stored is not None else None
    stream = sys.stderr if to_stdout else sys.stdout
    if diff is not None:
        stream.write(snapshot_check.render(diff, path=args.snapshot, limit=args.max_list) + "\n")
    if args.update:
        _write(args.snapshot, output.snapshot_text(data))
        stream.write(f"snapshot {args.snapshot}: written\n")
        return 0
    return 1 if diff is not None and diff.decisions_changed else 0


def replay_cmd(args: argparse.Namespace) -> int:
    from s3.replay import output, report
    from s3.replay.diff import diff as ab_diff
    from s3.replay.diff import summarize
    from s3.replay.outcomes import OutcomeError
    from s3.replay.replay import ReplayConfig, check_live, replay

    if getattr(args, "check", False) and args.snapshot and not Path(args.snapshot).is_file():
        raise UsageError(f"no snapshot at {args.snapshot}: create it with --update")
    if args.hold_events is not None and args.hold_events < 1:
        raise UsageError("--hold-events must be at least 1")
    if (args.hold_ms is not None or args.hold_events is not None) and (
        args.attribution or args.walk_forward
    ):
        raise UsageError(
            "--attribution and --walk-forward need the outcome simulation "
            "(leave out --hold-ms and --hold-events)"
        )
    if args.walk_forward and args.walk_forward < 2:
        raise UsageError("--walk-forward needs at least 2 windows")
    tape = _tape(args.tape, args.limit)
    snap_a = _bundle(args.bundle)
    snap_b = _bundle(args.against) if args.against else None
    if snap_a is None or (args.against and snap_b is None):
        return 1
    if _unknown_keys(tape, snap_a, strict=getattr(args, "strict", False)):
        return 1
    fixed_hold = args.hold_ms is not None or args.hold_events is not None
    cfg = ReplayConfig(
        hold_ms=None
        if args.hold_ms is not None and args.hold_ms < 0
        else (args.hold_ms if args.hold_ms is not None else 60_000),
        hold_events=args.hold_events,
        exits=not fixed_hold,
        latency_ms=args.latency_ms,
        clock=args.clock,
        budgets=not args.no_budgets,
        health=args.health,
        kill_switch=args.kill_switch,
    )
    n = len(tape.events)
    with _progress(args.quiet, "replaying") as progress:
        task = progress.add_task("replay", total=n * (2 if snap_b else 1))
        try:
            a = replay(tape, snap_a, cfg, progress=lambda i: progress.update(task, completed=i))
            b = (
                replay(tape, snap_b, cfg, progress=lambda i: progress.update(task, completed=n + i))
                if snap_b is not None
                else None
            )
        except OutcomeError as exc:
            _err(f"s3 replay: {exc}")
            return 1
    d = ab_diff(a, b) if b is not None else None
    took = a.elapsed_s + (b.elapsed_s if b else 0.0)
    rate = (n * (2 if b else 1)) / took if took > 0 else 0.0
    to_stdout = args.json == "-" or args.snapshot == "-"
    outcomes = _outcomes(args, tape, cfg, a, b, [s for s in (snap_a, snap_b) if s is not None])
    if outcomes is None:
        return 1
    if not to_stdout:
        if d is not None and b is not None:
            _out(output.diff_text(a, b, d, limit=args.max_list))
            if a.exits:
                _out(output.outcomes_text(a) + output.outcomes_text(b))
        else:
            _out(output.summary_text(a, summarize(a), rules=not args.no_rules))
            if a.exits:
                _out(output.outcomes_text(a))
        _out(outcomes["text"])
        _out(
            f"replayed {n} events x {2 if b else 1} bundle(s) in {took:.2f} s ({rate:,.0f} decisions/s)\n"
        )
    if args.json:
        doc = (
            output.diff_json(a, b, d)
            if d is not None and b is not None
            else output.result_json(a, events=args.events)
        )
        doc.update(outcomes["json"])
        _write(args.json, output.dumps(doc))
    if args.html:
        page = (
            report.html_diff(a, b, d, outcomes["html"])
            if d is not None and b is not None
            else report.html_report(a, outcomes["html"])
        )
        _write(args.html, page)
        if not to_stdout:
            _out(f"HTML report: {args.html}\n")
    if args.snapshot and (getattr(args, "check", False) or getattr(args, "update", False)):
        return _snapshot_check(args, output.snapshot_data(a), to_stdout)
    if args.snapshot:
        _write(args.snapshot, output.snapshot_text(output.snapshot_data(a)))
        if args.snapshot_b and b is not None:
            _write(args.snapshot_b, output.snapshot_text(output.snapshot_data(b)))
    code = 0
    if args.check_live:
        check = check_live(tape, a)
        stream = sys.stderr if to_stdout else sys.stdout
        stream.write(
            f"live check: {check.compared} live decisions compared, {check.matched} identical, "
            f"{len({m.key for m in check.mismatches})} differ, {check.no_live_record} replayed "
            f"without a live record, {len(check.live_not_replayed)} live decisions not replayed\n"
        )
        for m in check.mismatches[: args.max_list]:
            stream.write(f"  {m.key} {m.path}: live {m.live!r} != replay {m.replay!r}\n")
        for k in check.live_not_replayed[: args.max_list]:
            stream.write(f"  live decision {k} has no replayed decision\n")
        if not check.compared:
            stream.write("  (the tape holds no live decisions: record with --decisions)\n")
        code = 0 if check.ok and check.compared else 1
    return code


def _outcomes(
    args: argparse.Namespace, tape: Any, cfg: Any, a: Any, b: Any, snaps: list[Any]
) -> dict[str, Any] | None:
    """The outcome parts of the report: A/B Δ P&L, attribution, walk-forward (text, JSON, HTML)."""
    from s3.replay import compare, output
    from s3.replay.attribution import attribute
    from s3.replay.figures import figures
    from s3.replay.outcomes import OutcomeError
    from s3.replay.report_outcomes import outcomes_section

    out: dict[str, Any] = {"text": "", "json": {}, "html": ""}
    if not a.exits:
        return out
    results = [r for r in (a, b) if r is not None]
    ab = compare.ab_outcomes(a, b, seed=args.seed) if b is not None else None
    if ab is not None:
        out["text"] += compare.ab_text(ab)
        out["json"]["outcomes_ab"] = ab
        out["json"]["outcomes"] = {
            "a": output.outcomes_json(a),
            "b": output.outcomes_json(b),
        }
    attributions: list[tuple[str, dict[str, Any]]] = []
    walk = None
    try:
        if args.attribution:
            for r, snap in zip(results, snaps, strict=True):
                at = attribute(tape, snap, cfg, seed=args.seed)
                doc = at.to_json()
                attributions.append((r.label, doc))
                out["text"] += output.attribution_text(r.label, doc, at.elapsed_s)
            out["json"]["attribution"] = {label: doc for label, doc in attributions}
        if args.walk_forward:
            walk = compare.walk_forward(tape, snaps, cfg, args.walk_forward)
            out["text"] += compare.walk_forward_text(walk)
            out["json"]["walk_forward"] = walk
    except OutcomeError as exc:
        _err(f"s3 replay: {exc}")
        return None
    out["html"] = outcomes_section(
        results,
        figures_docs=[
            (r.label, figures(r.trades, r.first_ts, r.last_ts, output.capital(r))) for r in results
        ],
        attribution=attributions,
        walk=walk,
        ab=ab,
    )
    return out


# -- s3 tape ------------------------------------------------------------------------------------------------
def tape_sample(args: argparse.Namespace) -> int:
    from s3.replay import synth
    from s3.replay.tape import write_tape

    src = Path(args.source)
    if not src.is_file():
        raise UsageError(f"'{args.source}' does not exist")
    rows = synth.sample_rows(src)
    rows = [
        r
        for r in rows
        if (not args.symbol or r["symbol"] == args.symbol)
        and (args.ts_from is None or r["ts"] >= args.ts_from)
        and (args.ts_to is None or r["ts"] < args.ts_to)
    ]
    if not rows:
        raise UsageError("no sample rows match --symbol/--ts-from/--ts-to")
    funding = synth.sample_funding(rows[: args.limit] if args.limit else rows)
    lines = write_tape(
        args.out,
        synth.sample_header(src, note=args.note),
        [*funding, *synth.sample_records(rows, limit=args.limit)],
    )
    _out(f"wrote {args.out}: {lines - 2 - len(funding)} events from {src}\n")
    return 0


def tape_synth(args: argparse.Namespace) -> int:
    from s3.replay import synth
    from s3.replay.tape import write_tape

    if args.events < 1:
        raise UsageError("--events must be at least 1")
    with _progress(args.quiet, "generating") as progress:
        task = progress.add_task("synth", total=args.events)
        records = synth.synth_records(args.events, seed=args.seed)

        def counted() -> Any:
            for n, r in enumerate(records):
                if n % 5000 == 0:
                    progress.update(task, completed=n)
                yield r

        lines = write_tape(args.out, synth.synth_header(args.events, args.seed), counted())
    _out(
        f"wrote {args.out}: {args.events} events ({lines - 1 - args.events} state and funding records)\n"
    )
    return 0


def tape_info(args: argparse.Namespace) -> int:
    import collections

    from s3.replay.output import when

    tape = _tape(args.tape, 0)
    h = tape.header
    by_symbol = collections.Counter(e.symbol for e in tape.events)
    bad = sum(e.error is not None for e in tape.events)
    ts = [e.ts for e in tape.events if e.ts is not None]
    states = len({id(e.state) for e in tape.events})
    _out(
        f"{args.tape}: {h.format} v{h.version}, source: {h.source or '-'}\n"
        f"  {len(tape.events)} events ("
        + ", ".join(f"{s} {n}" for s, n in sorted(by_symbol.items()))
        + f"), {bad} unparseable, {states} distinct states, {len(tape.decisions)} live decisions\n"
        + (f"  tape time {when(min(ts))} -> {when(max(ts))} UTC\n" if ts else "")
        + (f"  note: {h.note}\n" if h.note else "")
    )
    return 0


# -- wiring --------------------------------------------------------------------------------------------------
def add_commands(sub: Any, parser_class: Any) -> None:
    r = sub.add_parser("record", help="capture feat:events and the state into a tape (JSON lines)")
    r.add_argument("out", metavar="OUT", help="the tape to write (.gz: gzip)")
    r.add_argument(
        "--redis", default=None, metavar="HOST:PORT[,...]", help="default: S3_REDIS_ADDRESSES"
    )
    r.add_argument("--prefix", default=None, help="key prefix (default: S3_REDIS_PREFIX)")
    r.add_argument("--symbols", default=None, help="comma-separated (default: S3_SYMBOLS)")
    r.add_argument("--since", default="-", metavar="ID", help="first stream id (backfill)")
    r.add_argument("--until", default="+", metavar="ID", help="last stream id (backfill)")
    r.add_argument("--count", type=int, default=0, help="stop after N events (0: no limit)")
    r.add_argument(
        "--follow",
        action="store_true",
        help="record new entries as they arrive, re-reading the state with each",
    )
    r.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --follow: stop after this long",
    )
    r.add_argument(
        "--decisions",
        action="store_true",
        help="add the live decisions from the store (S3_DB_ARANGO_URI / S3_SQLITE_PATH)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress display")
    r.set_defaults(func=record)

    p = sub.add_parser(
        "replay", help="decide a tape with a bundle (and --against another): what would it do?"
    )
    p.add_argument("tape", metavar="TAPE")
    p.add_argument("--bundle", required=True, metavar="A", help="bundle directory")
    p.add_argument("--against", default=None, metavar="B", help="second bundle: A/B diff")
    p.add_argument(
        "--hold-ms",
        type=int,
        default=None,
        metavar="MS",
        help="no outcome simulation: close a position this long after it opened, in tape time "
        "(negative: never). Default: every open is followed to its simulated exit (P&L)",
    )
    p.add_argument(
        "--hold-events",
        type=int,
        default=None,
        metavar="N",
        help="no outcome simulation: close a position N events after it opened",
    )
    p.add_argument(
        "--latency-ms",
        type=int,
        default=0,
        metavar="MS",
        help="now_ms = ts + this, where the tape has no live clock reading",
    )
    p.add_argument(
        "--clock",
        choices=("recorded", "tape"),
        default="recorded",
        help="recorded: the live clock reading when the tape has it (default)",
    )
    p.add_argument(
        "--no-budgets",
        action="store_true",
        help="no budget or concurrency limit (isolates the rules' effect)",
    )
    p.add_argument(
        "--health",
        default=None,
        choices=("GREEN", "YELLOW", "ORANGE", "RED"),
        help="force a health state (what-if)",
    )
    p.add_argument(
        "--kill-switch", default=None, choices=("ON", "OFF"), help="force the kill switch (what-if)"
    )
    p.add_argument("--limit", type=int, default=0, help="the first N events only")
    p.add_argument(
        "--json", default=None, metavar="FILE", help="machine-readable result ('-': stdout)"
    )
    p.add_argument("--events", action="store_true", help="with --json: one row per event too")
    p.add_argument("--html", default=None, metavar="FILE", help="HTML report with charts")
    p.add_argument(
        "--snapshot",
        default=None,
        metavar="FILE",
        help="A's full decision records, stable and diff-friendly (the syrupy format)",
    )
    p.add_argument("--snapshot-b", default=None, metavar="FILE", help="the same for B")
    snap = p.add_mutually_exclusive_group()
    snap.add_argument(
        "--check",
        action="store_true",
        help="with --snapshot F: compare with F decision by decision (event, field, "
        "before -> after); exit 1 when a decision changed",
    )
    snap.add_argument(
        "--update", action="store_true", help="with --snapshot F: rewrite F (showing what changed)"
    )
    p.add_argument(
        "--check-live",
        action="store_true",
        help="compare with the live decisions on the tape, field by field (exit 1 if any differ)",
    )
    p.add_argument(
        "--max-list", type=int, default=20, metavar="N", help="events listed per section"
    )
    p.add_argument("--no-rules", action="store_true", help="leave the per-rule table out")
    p.add_argument(
        "--attribution",
        action="store_true",
        help="what each rule earns: leave-one-out P&L with 95 %% block-bootstrap intervals",
    )
    p.add_argument(
        "--walk-forward",
        type=int,
        default=0,
        metavar="N",
        help="also replay N consecutive windows of the tape on their own and report each",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument(
        "--strict", action="store_true", help="a feature key the bundle does not read is an error"
    )
    p.set_defaults(func=replay_cmd)

    t = sub.add_parser("tape", help="make and inspect tapes: sample, synth, info")
    tsub = t.add_subparsers(dest="tape_command", required=True, parser_class=parser_class)
    s = tsub.add_parser("sample", help="a tape from the real feature sample (data/samples)")
    s.add_argument("out", metavar="OUT")
    s.add_argument(
        "--source",
        default=str(
            Path(__file__).resolve().parents[1] / "data" / "samples" / "features_real.jsonl"
        ),
        help="a features JSONL file",
    )
    s.add_argument("--symbol", default=None, help="one symbol only")
    s.add_argument("--ts-from", type=int, default=None, metavar="MS", help="rows with ts >= MS")
    s.add_argument("--ts-to", type=int, default=None, metavar="MS", help="rows with ts < MS")
    s.add_argument("--limit", type=int, default=0, help="the first N events (in time order)")
    s.add_argument("--note", default="", help="a note for the header")
    s.set_defaults(func=tape_sample)
    y = tsub.add_parser("synth", help="a synthetic tape of any length (seeded, reproducible)")
    y.add_argument("out", metavar="OUT")
    y.add_argument("--events", type=int, default=10_000)
    y.add_argument("--seed", type=int, default=1)
    y.add_argument("--quiet", action="store_true")
    y.set_defaults(func=tape_synth)
    i = tsub.add_parser("info", help="what a tape holds")
    i.add_argument("tape", metavar="TAPE")
    i.set_defaults(func=tape_info)
