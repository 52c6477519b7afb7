"""Tapes: what `s3 record` captured, as JSON lines (gzip when the name ends in `.gz`).

A tape is a header line and then records in the order the engine saw them:

    {"kind":"header","format":"s3-tape","version":1,"source":"...","symbols":[...],...}
    {"kind":"state","ts":...,"kill_switch":"OFF","health":"GREEN","funding":{"ETHUSDT":0.0002}}
    {"kind":"event","symbol":"BTCUSDT","id":"1723161317000-0","fields":{"ts":"...","mid":"...",...}}
    {"kind":"decision","symbol":"BTCUSDT","t0_ms":...,"side":"BUY","now_ms":...,"record":{...}}

- ``state``: the shared state a decision reads besides the features (`prod:kill_switch`,
  `prod:health:system:state`, `funding:next:{SYMBOL}`), complete each time (a symbol missing from
  ``funding`` means the key was missing). It holds for every event after it until the next one.
- ``event``: one `feat:events:{SYMBOL}` entry with its fields exactly as on the stream; the replay
  parses it with the worker's own parser (`parse_feature_entry`), so a malformed entry fails the
  same way it failed live.
- ``decision``: optional, what the live engine decided for (symbol, t0, side) (the store's
  `signals` record); the replay takes its clock reading from it and `--check-live` compares.
- ``funding``: optional, one settled funding payment of the exchange's history
  (``{"kind":"funding","symbol":"BTCUSDT","time":1721347200000,"rate":0.0001}``, rate per
  interval, positive: longs pay). The outcome simulation charges it to every position open across
  ``time``; a position that crosses a funding time the tape has no rate for fails the run.

Budgets and concurrency are not on the tape: the replay simulates them (see `replay.py`).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from s3.adapters.redis_streams import ParseError, parse_feature_entry

TAPE_FORMAT = "s3-tape"
TAPE_VERSION = 1


class Header(msgspec.Struct, frozen=True, tag="header", tag_field="kind"):
    format: str = TAPE_FORMAT
    version: int = TAPE_VERSION
    source: str = ""
    """Where the records come from: a Redis address, a sample file, a generator and its seed."""
    symbols: list[str] = []
    created_ms: int = 0
    """Wall clock when recorded; 0 for derived and synthetic tapes (so they are reproducible)."""
    note: str = ""


class State(msgspec.Struct, frozen=True, tag="state", tag_field="kind"):
    ts: int
    """Tape time (ms) from which this state holds (informational: order on the tape is what counts)."""
    kill_switch: str | None = None
    health: str | None = None
    funding: dict[str, float] = {}
    """`funding:next:{SYMBOL}` by symbol; a symbol left out means the key was missing."""


class Event(msgspec.Struct, frozen=True, tag="event", tag_field="kind"):
    symbol: str
    """The stream's symbol (`feat:events:{symbol}`)."""
    id: str
    """The stream entry id; "" for derived and synthetic tapes."""
    fields: dict[str, Any]


class LiveDecision(msgspec.Struct, frozen=True, tag="decision", tag_field="kind"):
    symbol: str
    t0_ms: int
    side: str | None
    now_ms: int
    record: dict[str, Any]
    """The full decision record the live engine stored (`signals.decision.record`)."""


class Funding(msgspec.Struct, frozen=True, tag="funding", tag_field="kind"):
    symbol: str
    time: int
    """The settlement time (epoch ms, as the exchange's history gives it)."""
    rate: float
    """The settled rate for the interval (fraction; positive: longs pay shorts)."""


Record = Header | State | Event | LiveDecision | Funding
_decoder = msgspec.json.Decoder(Record)
_encoder = msgspec.json.Encoder()


class TapeError(ValueError):
    """A tape that cannot be read: names the file and line."""


@dataclass(frozen=True, slots=True)
class TapeEvent:
    """One event as the worker hands it to the engine: parsed once when the tape is loaded."""

    index: int
    """Position among the tape's events (0-based)."""
    symbol: str
    entry_id: str
    state: State
    """The state in force for this event."""
    ts: int | None
    """The event's `ts` (t0 and features_ts of the decision); None when the entry does not parse."""
    features: dict[str, Any] | None
    """What `Runner._handle` passes to `Engine.decide` (side_hint taken out); None on a parse error."""
    side: str | None
    bar: bool
    """The entry carries high/low/close: the engine folds it into its ATR state."""
    error: ParseError | None


@dataclass
class Tape:
    header: Header
    events: list[TapeEvent]
    decisions: dict[tuple[str, int, str], LiveDecision] = field(default_factory=dict)
    """Recorded live decisions by (symbol, t0_ms, side or "")."""
    path: str = ""
    funding: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """The funding history on the tape: (time, rate) by symbol, in time order."""

    @property
    def symbols(self) -> list[str]:
        return sorted({e.symbol for e in self.events})


def is_gzip(path: str | Path) -> bool:
    return str(path).endswith(".gz")


def open_read(path: str | Path) -> IO[str]:
    raw = Path(path).read_bytes()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return io.StringIO(data.decode("utf-8"))


class TapeWriter:
    """Writes a tape line by line; gzip (deterministic: no name, mtime 0) when the name ends in .gz."""

    def __init__(self, path: str | Path, header: Header):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = self.path.open("wb")
        self._gz = (
            gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0)
            if is_gzip(path)
            else None
        )
        self.count = 0
        self.write(header)

    def write(self, record: Record) -> None:
        line = _encoder.encode(record) + b"\n"
        if self._gz is not None:
            self._gz.write(line)
        else:
            self._raw.write(line)
        self.count += 1

    def write_all(self, records: Iterable[Record]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
        self._raw.close()

    def __enter__(self) -> TapeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_tape(path: str | Path, header: Header, records: Iterable[Record]) -> int:
    """Write a whole tape; returns the number of lines (header included)."""
    with TapeWriter(path, header) as w:
        w.write_all(records)
        return w.count


def iter_records(path: str | Path) -> Iterator[tuple[int, Record]]:
    """(line number, record) for every line; the first must be a header of a known version."""
    with open_read(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = _decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise TapeError(f"{path}:{n}: not a tape record: {exc}") from None
            if n == 1:
                if not isinstance(rec, Header):
                    raise TapeError(f"{path}:1: a tape starts with a header record")
                if rec.format != TAPE_FORMAT or rec.version != TAPE_VERSION:
                    raise TapeError(
                        f"{path}:1: format {rec.format!r} version {rec.version} is not "
                        f"{TAPE_FORMAT!r} version {TAPE_VERSION}"
                    )
            elif isinstance(rec, Header):
                raise TapeError(f"{path}:{n}: a second header")
            yield n, rec


def prepare(index: int, ev: Event, state: State) -> TapeEvent:
    """Parse an entry as the worker does and build the features it passes to the engine."""
    parsed = parse_feature_entry(ev.fields, symbol=ev.symbol)
    if isinstance(parsed, ParseError):
        return TapeEvent(index, ev.symbol, ev.id, state, None, None, None, False, parsed)
    features = {
        **parsed.features,
        "mid": parsed.mid,
        "spread_bps": parsed.spread_bps,
        "depth_top1_usdt": parsed.depth_top1_usdt,
    }
    bar = all(k in features for k in ("high", "low", "close"))
    raw_side = features.pop("side_hint", None)
    side = str(raw_side) if raw_side else None
    return TapeEvent(index, ev.symbol, ev.id, state, parsed.ts_ms, features, side, bar, None)


def load(path: str | Path, *, limit: int = 0) -> Tape:
    """Read and parse a tape (``limit``: the first N events only)."""
    header: Header | None = None
    state = State(ts=0)
    events: list[TapeEvent] = []
    decisions: dict[tuple[str, int, str], LiveDecision] = {}
    funding: list[Funding] = []
    for _, rec in iter_records(path):
        if isinstance(rec, Header):
            header = rec
        elif isinstance(rec, State):
            state = rec
        elif isinstance(rec, Event):
            if limit and len(events) >= limit:
                continue
            events.append(prepare(len(events), rec, state))
        elif isinstance(rec, Funding):
            funding.append(rec)
        else:
            decisions[(rec.symbol, rec.t0_ms, rec.side or "")] = rec
    if header is None:
        raise TapeError(f"{path}: empty file, not a tape")
    return Tape(header, events, decisions, str(path), _funding_table(funding))


def _funding_table(records: Iterable[Funding]) -> dict[str, list[tuple[int, float]]]:
    table: dict[str, dict[int, float]] = {}
    for r in records:
        table.setdefault(r.symbol, {})[r.time] = r.rate
    return {s: sorted(t.items()) for s, t in sorted(table.items())}


def from_records(header: Header, records: Iterable[Record]) -> Tape:
    """A tape in memory (tests, the generator)."""
    state = State(ts=0)
    events: list[TapeEvent] = []
    decisions: dict[tuple[str, int, str], LiveDecision] = {}
    funding: list[Funding] = []
    for rec in records:
        if isinstance(rec, State):
            state = rec
        elif isinstance(rec, Event):
            events.append(prepare(len(events), rec, state))
        elif isinstance(rec, LiveDecision):
            decisions[(rec.symbol, rec.t0_ms, rec.side or "")] = rec
        elif isinstance(rec, Funding):
            funding.append(rec)
    return Tape(header, events, decisions, funding=_funding_table(funding))


def stream_fields(row: dict[str, Any]) -> dict[str, str]:
    """A feature row as a producer writes it to the stream: every value a string, no symbol."""
    out = {}
    for k, v in row.items():
        if k == "symbol" or v is None:
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out
