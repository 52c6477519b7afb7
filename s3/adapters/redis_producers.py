"""The stream producers of S3 (spec §4): `sig:events`, the dual-track `ord:cmd:{SYMBOL}`, and the
reader of `cfg:events`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import msgspec

from s3.adapters.feature_events import _number
from s3.adapters.redis_client import Client, Pipeline
from s3.adapters.redis_keys import Keys
from s3.adapters.s4_client import OrderCmdRequest
from s3.core.types import Decision

SIG_FIELDS = ("ts", "symbol", "decision", "rules_fired", "model_p", "config_rev")
ORD_FIELDS = ("intent_id", "market", "side", "qty", "policy")
ORD_OPTIONAL = ("px", "sl_px", "tp_px")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_batches(reply: Any) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """XREADGROUP/XREAD reply (RESP2 list or RESP3 dict) -> [(key, [(id, fields)])]."""
    if not reply:
        return []
    # RESP3 answers {key: [entries]}, the entry list wrapped once more
    pairs = [(k, v[0] if v else []) for k, v in reply.items()] if isinstance(reply, dict) else reply
    out = []
    for key, entries in pairs:
        out.append((_text(key), [(i, f) for i, f in entries if i is not None and f is not None]))
    return out


# -- producers ---------------------------------------------------------------------------------------------
def _encode(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return str(value)
    return msgspec.json.encode(value).decode()


def _stream_fields(fields: Mapping[str, Any], required: Iterable[str], what: str) -> dict[Any, Any]:
    missing = [f for f in required if f not in fields]
    if missing:
        raise ValueError(f"{what}: missing field(s) {', '.join(missing)}")
    return {k: _encode(v) for k, v in fields.items()}


def emit_signal(
    client: Client | Pipeline, keys: Keys, fields: Mapping[str, Any], *, maxlen: int = 100_000
) -> str | None:
    """XADD a decision snapshot to `sig:events` (MAXLEN ~ ``maxlen``); returns the entry id, or
    None when ``client`` is a pipeline (the XADD is queued on it).

    Required: ts, symbol, decision, rules_fired (a list, written as JSON), model_p (None is
    written as ""), config_rev; extra fields are kept.
    """
    if not isinstance(fields.get("rules_fired", []), list | tuple):
        raise ValueError("sig:events: rules_fired must be a list of rule ids")
    data = _stream_fields(fields, SIG_FIELDS, "sig:events")
    entry = client.xadd(keys.sig_events, data, maxlen=maxlen, approximate=True)
    # a pipeline answers with itself: str() of it would spell out its connection pool
    return None if isinstance(client, Pipeline) else str(entry)


def emit_order_cmd(
    client: Client, keys: Keys, symbol: str, fields: Mapping[str, Any], *, maxlen: int = 100_000
) -> str:
    """XADD an order command to `ord:cmd:{SYMBOL}` (the dual-track backup, spec §8).

    Required: intent_id, market (FUT/SPOT), side (BUY/SELL), qty (> 0), policy; optional px,
    sl_px, tp_px (a None is left out). Decimals are written exactly.
    """
    present = {k: v for k, v in fields.items() if not (k in ORD_OPTIONAL and v is None)}
    data = _stream_fields(present, ORD_FIELDS, f"ord:cmd:{symbol}")
    if data["market"] not in ("FUT", "SPOT"):
        raise ValueError(f"ord:cmd:{symbol}: market must be FUT or SPOT, found {data['market']!r}")
    if data["side"] not in ("BUY", "SELL"):
        raise ValueError(f"ord:cmd:{symbol}: side must be BUY or SELL, found {data['side']!r}")
    qty = _number(data["qty"])
    if qty is None or not math.isfinite(qty) or qty <= 0:
        raise ValueError(f"ord:cmd:{symbol}: qty must be a number > 0, found {data['qty']!r}")
    return str(client.xadd(keys.ord_cmd(symbol), data, maxlen=maxlen, approximate=True))


class CfgEvent(msgspec.Struct, frozen=True):
    """One `cfg:events` entry ({rev, bundle_id, reason}); ``rev`` is None when not an integer."""

    entry_id: str
    rev: int | None
    bundle_id: str
    reason: str
    fields: dict[str, str]


def read_cfg_events(
    client: Client, keys: Keys, last_id: str = "$", block_ms: int | None = None, *, count: int = 100
) -> tuple[str, list[CfgEvent]]:
    """XREAD `cfg:events` after ``last_id`` (every instance sees every event: no group).

    Returns the id to pass next time and the events. ``"$"`` means only events after now;
    ``block_ms=None`` does not wait. ``"$"`` is resolved to the stream's last id before reading, so
    the id returned is always concrete and the next call misses nothing written in between.
    """
    if last_id == "$":
        newest = client.xrevrange(keys.cfg_events, "+", "-", count=1)
        last_id = str(newest[0][0]) if newest else "0-0"
    reply = client.xread({keys.cfg_events: last_id}, count=count, block=block_ms)
    events = []
    for _, entries in _stream_batches(reply):
        for entry_id, fields in entries:
            rev = _number(fields.get("rev", ""))
            events.append(
                CfgEvent(
                    entry_id=entry_id,
                    rev=rev if isinstance(rev, int) else None,
                    bundle_id=fields.get("bundle_id", ""),
                    reason=fields.get("reason", ""),
                    fields=dict(fields),
                )
            )
            last_id = entry_id
    return last_id, events


class Emitter:
    """The engine's stream producers: `sig:events` and the dual-track `ord:cmd:{SYMBOL}`."""

    def __init__(self, redis: Client, keys: Keys, maxlen: int):
        self.redis, self.keys, self.maxlen = redis, keys, maxlen

    def emit_signal(self, d: Decision, pipe: Any = None) -> None:
        """XADD the decision to `sig:events`, or queue it on ``pipe`` (the engine's last round
        trip, with the idempotency result)."""
        emit_signal(
            self.redis if pipe is None else pipe,
            self.keys,
            {
                "ts": d.now_ms,
                "symbol": d.symbol,
                "decision": d.decision,
                "rules_fired": list(d.rules_fired),
                "model_p": d.model_p,
                "config_rev": d.config_rev,
                "reason": d.reason,
                "reason_detail": d.reason_detail,
                "side": d.side or "",
                "intent_id": d.intent.intent_id if d.intent else "",
            },
            maxlen=self.maxlen,
        )

    def emit_order_cmd(self, order: OrderCmdRequest) -> None:
        emit_order_cmd(
            self.redis,
            self.keys,
            order.symbol,
            {
                "intent_id": order.intent_id,
                "market": order.market,
                "side": order.side,
                "qty": order.qty,
                "px": order.px,
                "sl_px": order.sl_px,
                "tp_px": order.tp_px,
                "policy": order.policy,
            },
            maxlen=self.maxlen,
        )
