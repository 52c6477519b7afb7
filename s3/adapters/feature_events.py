"""Feature events (`feat:events:{SYMBOL}` entries): the parser that says precisely why an entry
cannot be used. No Redis here; the stream worker calls it before the handler."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

REQUIRED_FEATURES = ("ts", "mid", "spread_bps", "depth_top1_usdt")
MAX_TS_MS = 2**53 - 1
"""The largest ``ts`` accepted: the store's integer range (about the year 287,000)."""
MAX_DEPTH = 32
"""Containers in a feature value nest at most this deep (features are scalars; deeper input is
refused before it reaches code that recurses over it)."""
_SHOWN = 80
"""At most this many characters of a bad value are quoted in an error."""


# -- parsing a feature event ------------------------------------------------------------------------
class ParsedEvent(msgspec.Struct, frozen=True):
    """A valid `feat:events` entry: the spec's required fields typed, every other field kept."""

    ts_ms: int
    mid: float
    spread_bps: float
    depth_top1_usdt: float
    features: dict[str, Any]
    """All fields but ``ts`` and ``payload``: numbers as int/float, anything else as text."""


class ParseError(msgspec.Struct, frozen=True):
    """Why an entry cannot be used; ``code`` is PARSE.BAD_JSON, MISSING_FIELD, BAD_TYPE or BAD_VALUE."""

    code: str
    field: str
    message: str


_NUMBER_START = frozenset("+-.0123456789")


def _number(value: Any) -> int | float | None:
    """A JSON number or a numeric string as int/float; anything else (bools too) is None."""
    kind = type(value)
    if kind is int or kind is float:
        return value
    if kind is not str or not value or value[0] not in _NUMBER_START:
        return None
    try:
        return float(value) if "." in value or "e" in value or "E" in value else int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return None


def _finite(number: float) -> bool:
    """``math.isfinite`` that says False for an integer too large for a float (it raises)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep lists and objects nest in ``value`` (a scalar is 0), counted without recursion;
    the count stops at ``limit + 1``."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list | tuple):
            depth += 1
            if depth > limit:
                return depth
            deepest = max(deepest, depth)
            todo.extend((v, depth) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _show(raw: Any) -> str:
    """``repr`` of a bad value, cut to `_SHOWN` characters (an entry may carry megabytes)."""
    text = repr(raw)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}… ({len(text)} characters)"


def _merged(fields: Mapping[str, Any]) -> Mapping[str, Any] | ParseError:
    """The flat fields, with those of a JSON ``payload`` object added (a name given both ways is
    an error)."""
    if "payload" not in fields:
        return fields
    values = dict(fields)
    raw = values.pop("payload")
    try:
        payload = msgspec.json.decode(raw)
    except (msgspec.DecodeError, TypeError) as exc:
        return ParseError("PARSE.BAD_JSON", "payload", f"field 'payload' is not valid JSON: {exc}")
    except RecursionError:
        return ParseError(
            "PARSE.BAD_JSON", "payload", "field 'payload' is nested too deeply to decode"
        )
    if not isinstance(payload, dict):
        kind = type(payload).__name__
        return ParseError(
            "PARSE.BAD_JSON", "payload", f"field 'payload' must be a JSON object, found {kind}"
        )
    for name, value in payload.items():
        if nesting_depth(value) > MAX_DEPTH:
            return ParseError(
                "PARSE.BAD_VALUE",
                name,
                f"field '{name}' in 'payload' nests lists/objects deeper than {MAX_DEPTH}",
            )
        if name in values:
            return ParseError(
                "PARSE.BAD_VALUE", name, f"field '{name}' is given both flat and in 'payload'"
            )
        values[name] = value
    return values


def _measure(values: Mapping[str, Any], name: str) -> float | ParseError:
    raw = values[name]
    number = _number(raw)
    if number is None:
        return ParseError(
            "PARSE.BAD_TYPE", name, f"field '{name}' must be a number, found {_show(raw)}"
        )
    if not _finite(number):
        return ParseError(
            "PARSE.BAD_VALUE", name, f"field '{name}' must be finite, found {_show(raw)}"
        )
    return float(number)


def _required(
    values: Mapping[str, Any], symbol: str | None
) -> tuple[int, float, float, float] | ParseError:
    """The four required fields typed. The first test is the hot path of every entry the worker
    reads; anything it does not accept goes through `_explain` (which finds the precise reason)."""
    get = values.get
    raw_ts, raw_mid, raw_spread, raw_depth = (
        get("ts"),
        get("mid"),
        get("spread_bps"),
        get("depth_top1_usdt"),
    )
    if (
        type(raw_ts) is str
        and type(raw_mid) is str
        and type(raw_spread) is str
        and type(raw_depth) is str
    ):
        try:
            ts, mid = int(raw_ts), float(raw_mid)
            spread, depth = float(raw_spread), float(raw_depth)
        except ValueError:
            return _explain(values, symbol)
        if (
            0 < ts <= MAX_TS_MS
            and 0 < mid < _INF
            and 0 <= spread < _INF
            and 0 <= depth < _INF
            and (symbol is None or get("symbol", symbol) == symbol)
        ):
            return ts, mid, spread, depth
    return _explain(values, symbol)


_INF = math.inf


def _explain(
    values: Mapping[str, Any], symbol: str | None
) -> tuple[int, float, float, float] | ParseError:
    for name in REQUIRED_FEATURES:
        if name not in values:
            return ParseError("PARSE.MISSING_FIELD", name, f"missing required field '{name}'")
    ts = _measure(values, "ts")
    if isinstance(ts, ParseError):
        return ts
    if not ts.is_integer():
        found = values["ts"]
        return ParseError(
            "PARSE.BAD_TYPE", "ts", f"field 'ts' must be integer milliseconds, found {_show(found)}"
        )
    if ts <= 0:
        return ParseError(
            "PARSE.BAD_VALUE", "ts", f"field 'ts' must be > 0, found {_show(values['ts'])}"
        )
    if ts > MAX_TS_MS:
        return ParseError(
            "PARSE.BAD_VALUE",
            "ts",
            f"field 'ts' must be at most 2**53-1 (epoch milliseconds), found {_show(values['ts'])}",
        )
    mid, spread, depth = (_measure(values, n) for n in REQUIRED_FEATURES[1:])
    for name, value, low in (
        ("mid", mid, None),
        ("spread_bps", spread, 0.0),
        ("depth_top1_usdt", depth, 0.0),
    ):
        if isinstance(value, ParseError):
            return value
        if (value <= 0.0) if low is None else (value < low):
            bound = "> 0" if low is None else ">= 0"
            return ParseError(
                "PARSE.BAD_VALUE",
                name,
                f"field '{name}' must be {bound}, found {_show(values[name])}",
            )
    found_symbol = values.get("symbol")
    if symbol is not None and found_symbol is not None and found_symbol != symbol:
        return ParseError(
            "PARSE.BAD_VALUE",
            "symbol",
            f"field 'symbol' is {_show(found_symbol)} but the stream is for {symbol!r}",
        )
    return int(ts), mid, spread, depth  # type: ignore[return-value]


def check_feature_entry(
    fields: Mapping[str, Any], *, symbol: str | None = None
) -> ParseError | None:
    """What `parse_feature_entry` would reject, without building the event (the worker's check)."""
    values = _merged(fields)
    if isinstance(values, ParseError):
        return values
    required = _required(values, symbol)
    return required if isinstance(required, ParseError) else None


def parse_feature_entry(
    fields: Mapping[str, Any], *, symbol: str | None = None
) -> ParsedEvent | ParseError:
    """Check and type one `feat:events` entry.

    Features come as flat fields, or as a JSON object in ``payload`` (flat fields beside it are
    kept; a name given both ways is an error). ``ts`` is integer epoch milliseconds > 0; ``mid`` a
    finite number > 0; ``spread_bps`` and ``depth_top1_usdt`` finite numbers >= 0. A ``symbol``
    field, when present, must name the stream's symbol.
    """
    values = _merged(fields)
    if isinstance(values, ParseError):
        return values
    required = _required(values, symbol)
    if isinstance(required, ParseError):
        return required
    features: dict[str, Any] = {}
    for name, value in values.items():
        if name != "ts":
            number = _number(value)
            features[name] = value if number is None or not _finite(number) else number
    ts, mid, spread, depth = required
    return ParsedEvent(
        ts_ms=ts, mid=mid, spread_bps=spread, depth_top1_usdt=depth, features=features
    )
