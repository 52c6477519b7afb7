"""The risk budget in Redis (spec §4, Part B5): atomic reservations, commit, release and self-heal,
each one Lua script over keys of a single cluster slot. It imports only redis, msgspec and the
other Redis adapters; the design notes (exact money, ledger layout, retention) follow the imports.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Literal

import msgspec
import redis

from s3.adapters._redis_risk_lua import (
    _COMMIT,
    _HEAL,
    _PRELUDE,
    _PRUNE,
    _RELEASE,
    _RESERVE,
    _SNAPSHOT,
)
from s3.adapters.redis_client import Client, connect
from s3.adapters.redis_keys import Keys

# Exact money. The spec's keys `risk:budget:fut_margin:inuse` / `risk:budget:spot_quote:inuse`
# hold a plain decimal string with 8 decimals ("40.00000000"): readable by anyone as the spec's
# Float, and the only counter there is (no hidden twin to disagree with it). Inside Lua it is
# parsed by string arithmetic into integer 1e-8 USDT units, added or subtracted as integers and
# printed back, so thousands of reserve/release cycles never drift (no INCRBYFLOAT, no float
# sum). Lua numbers are doubles, exact up to 2**53 units: hence the bound of 90,071,992.54740991
# USDT per amount and per budget. An amount is quantized once, half-even to 1e-8 (a float's noise
# such as 0.30000000000000004 goes), and that exact value is what the ledger records, the counter
# adds and the release subtracts; a budget maximum rounds down, so rounding never raises a limit.
# A counter holding anything else (a hand edit) makes reservations fail closed until self-heal.
#
# Ledger layout: the hash `risk:ledger` maps intent_id to a JSON entry {intent_id, market,
# symbol, amount, state, ts, committed_ts?, released_ts?, released_from?, reason?};
# `risk:ledger:pending` (zset by reservation time) indexes pending entries for self-heal;
# `risk:ledger:released` (zset by release time) indexes released ones, pruned after a retention
# (one day by default, which must outlast any retry of an intent id: a pruned id could be
# reserved again); `risk:symbols` lists every symbol with a concurrency counter. Committed
# entries stay until released, since they hold budget while the position is open.
UNITS_PER_USDT = 100_000_000
MAX_UNITS = 2**53 - 1
DAY_MS = 86_400_000

State = Literal["pending", "committed", "released"]
MARKETS = ("FUT", "SPOT")
_LIMIT_NAME = {"FUT": "FUT_MARGIN", "SPOT": "SPOT_QUOTE"}


# -- values ---------------------------------------------------------------------------------------
class LedgerEntry(msgspec.Struct, frozen=True):
    """One reservation as the ledger holds it; ``amount`` is exact (8 decimals)."""

    intent_id: str
    market: str
    symbol: str
    amount: Decimal
    state: State
    ts: int
    committed_ts: int | None = None
    released_ts: int | None = None
    released_from: str | None = None
    reason: str | None = None


class ReserveResult(msgspec.Struct, frozen=True):
    """What `reserve` did.

    ``outcome`` is ``reserved`` (taken now), ``replay`` (the ledger already held this intent:
    nothing was taken, ``entry`` is the first reservation) or ``refused``. ``ok`` says whether
    the intent holds budget after the call. ``detail`` is ``OK``, a ``RISK_BUDGET.*`` detail as
    in `s3.core.decide`, ``RESERVATION.RELEASED`` (a replay of a released intent) or
    ``RESERVATION.CONFLICT`` (a replay whose market or symbol differ from the ledger's).
    ``inuse_usdt``/``concurrency`` are the counters of the request's market and symbol after
    the call (``None``: the counter holds something that is not a number).
    """

    ok: bool
    outcome: Literal["reserved", "replay", "refused"]
    detail: str
    sentence: str
    intent_id: str
    market: str
    symbol: str
    amount_usdt: Decimal
    budget_max_usdt: Decimal
    concurrency_limit: int
    inuse_usdt: Decimal | None
    concurrency: int | None
    entry: LedgerEntry | None = None


class CommitResult(msgspec.Struct, frozen=True):
    """``committed`` now, ``already_committed``, ``refused_released`` or ``unknown`` intent;
    ``ok`` when the reservation is committed after the call."""

    ok: bool
    outcome: Literal["committed", "already_committed", "refused_released", "unknown"]
    intent_id: str
    entry: LedgerEntry | None = None


class ReleaseResult(msgspec.Struct, frozen=True):
    """``released`` now (``freed``: budget and slot given back), ``already_released`` (nothing
    freed: releasing twice frees once) or ``unknown`` intent."""

    freed: bool
    outcome: Literal["released", "already_released", "unknown"]
    intent_id: str
    released_from: str | None = None
    entry: LedgerEntry | None = None
    inuse_usdt: Decimal | None = None
    concurrency: int | None = None


class Correction(msgspec.Struct, frozen=True):
    """One thing self-heal changed, for the store's RESERVATION_HEALED events.

    ``RELEASED_STALE``: a pending reservation older than the bound was released (``key`` is the
    ledger). ``COUNTER_FIXED``: a counter disagreed with the ledger and was set to the ledger's
    value (``before`` is its raw value, ``None`` when missing). ``INDEX_FIXED``: an index zset
    disagreed with the ledger (``before``/``after`` are the member's score, ``None`` = absent).
    """

    kind: Literal["RELEASED_STALE", "COUNTER_FIXED", "INDEX_FIXED"]
    key: str
    before: str | None = None
    after: str | None = None
    intent_id: str | None = None


class RiskSnapshot(msgspec.Struct, frozen=True):
    """One atomic read of the counters and the ledger (tests, chaos checker, metrics)."""

    inuse_raw: dict[str, str | None]
    concurrency_raw: dict[str, str | None]
    entries: dict[str, LedgerEntry]

    @property
    def inuse(self) -> dict[str, Decimal | None]:
        return {m: maybe_usdt(units_of(raw)) for m, raw in self.inuse_raw.items()}

    @property
    def concurrency(self) -> dict[str, int | None]:
        return {s: count_of(raw) for s, raw in self.concurrency_raw.items()}

    def live(self) -> list[LedgerEntry]:
        return [e for e in self.entries.values() if e.state != "released"]

    def drift(self) -> list[str]:
        """Every way the counters disagree with the unreleased ledger entries (empty: exact)."""
        live = self.live()
        out = []
        for m in MARKETS:
            want = sum((e.amount for e in live if e.market == m), Decimal(0))
            have = self.inuse[m]
            if have is None or have != want:
                out.append(f"{m} in use {self.inuse_raw[m]!r} != ledger {want}")
        symbols = set(self.concurrency_raw) | {e.symbol for e in live}
        for s in sorted(symbols):
            want_n = sum(1 for e in live if e.symbol == s)
            have_n = self.concurrency.get(s, 0)
            if have_n != want_n:
                out.append(f"{s} concurrency {self.concurrency_raw.get(s)!r} != ledger {want_n}")
        return out


# -- exact amounts --------------------------------------------------------------------------------
_PLAIN = re.compile(r"[ \t\n\r\f\v]*\+?([0-9]*)\.?([0-9]*)[ \t\n\r\f\v]*")
_COUNT = re.compile(r"[ \t\n\r\f\v]*\+?([0-9]{1,15})[ \t\n\r\f\v]*")


def units_of(raw: str | None) -> int | None:
    """The Lua parse, in Python: a decimal string to 1e-8 units (missing is 0, junk ``None``)."""
    if raw is None:
        return 0
    m = _PLAIN.fullmatch(raw)
    if m is None or not (m[1] or m[2]):
        return None
    whole, frac = m[1].lstrip("0"), m[2]
    if len(whole) > 8:
        return None
    u = int(whole or 0) * UNITS_PER_USDT + int((frac + "0" * 8)[:8])
    u += 1 if frac[8:].strip("0") else 0
    return u if u <= MAX_UNITS else None


def count_of(raw: str | None) -> int | None:
    """The Lua parse of a concurrency counter (missing is 0, anything but digits ``None``)."""
    if raw is None:
        return 0
    m = _COUNT.fullmatch(raw)
    return None if m is None else int(m[1])


def usdt(units: int) -> Decimal:
    """1e-8 units to an exact Decimal of USDT."""
    return Decimal(units).scaleb(-8)


def maybe_usdt(units: int | None) -> Decimal | None:
    return None if units is None else usdt(units)


def to_units(amount: float | Decimal | str, *, floor: bool, what: str) -> int:
    """USDT to 1e-8 units: half-even (amounts), or down (maxima); a float via its repr."""
    try:
        d = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(amount)
    except InvalidOperation:
        d = Decimal("NaN")
    if not d.is_finite() or d < 0:
        raise ValueError(f"{what} must be a finite amount >= 0, got {amount!r}")
    u = int((d * UNITS_PER_USDT).to_integral_value(ROUND_FLOOR if floor else ROUND_HALF_EVEN))
    if u > MAX_UNITS:
        raise ValueError(f"{what} {amount!r} exceeds the ledger's bound of {usdt(MAX_UNITS)} USDT")
    return u


def _show(d: Decimal | None) -> str:
    return "unreadable" if d is None else format(d.normalize(), "f")


def _text(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def _entry(raw: Any) -> LedgerEntry | None:
    return None if raw is None else msgspec.json.decode(_text(raw), type=LedgerEntry)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- the ledger -----------------------------------------------------------------------------------
class RiskLedger:
    """Atomic risk reservations on a standalone Redis or a Redis Cluster (keys in one slot)."""

    def __init__(self, client: Client, keys: Keys) -> None:
        self._client = client
        self.keys = keys
        self._reserve = client.register_script(_PRELUDE + _RESERVE)
        self._commit = client.register_script(_COMMIT)
        self._release = client.register_script(_PRELUDE + _RELEASE)
        self._heal = client.register_script(_PRELUDE + _HEAL)
        self._prune = client.register_script(_PRUNE)
        self._snapshot = client.register_script(_SNAPSHOT)

    @classmethod
    def from_addresses(cls, addresses: str | Sequence[str], *, prefix: str = "") -> RiskLedger:
        """``host:port`` (standalone) or several (cluster, keys tagged), as `S3_REDIS_ADDRESSES`."""
        client, keys = connect(addresses)
        return cls(client, Keys(prefix=prefix, risk_tag=keys.risk_tag))

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "") -> RiskLedger:
        """A standalone server from a ``redis://`` URL."""
        return cls(redis.Redis.from_url(url, decode_responses=True), Keys(prefix=prefix))

    def close(self) -> None:
        self._client.close()

    def reserve(
        self,
        intent_id: str,
        market: str,
        symbol: str,
        amount_usdt: float | Decimal | str,
        budget_max_usdt: float | Decimal | str,
        concurrency_limit: int,
        now_ms: int,
    ) -> ReserveResult:
        """Take ``amount_usdt`` of the market's budget and one of the symbol's slots, atomically.

        Refuses (nothing written) when ``inuse + amount > max`` or ``concurrency >= limit``, or
        when a counter holds something that is not a number (fail closed until self-heal). An
        intent the ledger already holds is never reserved again: its entry is returned.

        Raises:
            ValueError: unknown market, empty id or symbol, amount not positive or out of range.
        """
        if market not in MARKETS:
            raise ValueError(f"market must be FUT or SPOT, got {market!r}")
        if not intent_id or not symbol:
            raise ValueError("intent_id and symbol must not be empty")
        amount = to_units(amount_usdt, floor=False, what="amount_usdt")
        if amount <= 0:
            raise ValueError(f"amount_usdt must be positive, got {amount_usdt!r}")
        max_units = to_units(budget_max_usdt, floor=True, what="budget_max_usdt")
        limit = int(concurrency_limit)
        k = self.keys
        out = self._reserve(
            keys=[
                k.ledger,
                k.ledger_pending,
                k.budget_inuse(market),
                k.concurrency(symbol),
                k.risk_symbols,
            ],
            args=[intent_id, market, symbol, amount, max_units, limit, int(now_ms)],
        )
        status, raw_entry, inuse_raw, conc_raw = (_text(x) for x in out)
        inuse, conc = maybe_usdt(units_of(inuse_raw)), count_of(conc_raw)
        entry = _entry(raw_entry)
        name = _LIMIT_NAME[market].lower()
        max_usdt, amount_usdt_exact = usdt(max_units), usdt(amount)
        ok, outcome, detail = False, "refused", "RISK_BUDGET." + _LIMIT_NAME[market]
        if status == "refused_budget" and inuse is None:
            sentence = f"{name} in use is unreadable ({inuse_raw!r}): refused until self-heal"
        elif status == "refused_budget":
            sentence = (
                f"{name} in use {_show(inuse)} + {_show(amount_usdt_exact)} USDT > max "
                f"{_show(max_usdt)}"
            )
        elif status == "refused_concurrency":
            detail = "RISK_BUDGET.CONCURRENCY"
            sentence = (
                f"concurrent entries on {symbol} unreadable ({conc_raw!r}): refused until self-heal"
                if conc is None
                else f"{conc} concurrent entries on {symbol} >= limit {limit}"
            )
        else:
            assert entry is not None
            amount_usdt_exact = entry.amount
            ok, outcome, detail = True, status, "OK"
            if status == "reserved":
                sentence = (
                    f"reserved {_show(entry.amount)} USDT of {name} ({_show(inuse)} of "
                    f"{_show(max_usdt)} in use) and slot {conc} of {limit} on {symbol}"
                )
            elif (entry.market, entry.symbol) != (market, symbol):
                ok, detail = False, "RESERVATION.CONFLICT"
                sentence = (
                    f"intent {intent_id} is already reserved for {entry.market} {entry.symbol}, "
                    f"not {market} {symbol}: nothing taken"
                )
            elif entry.state == "released":
                ok, detail = False, "RESERVATION.RELEASED"
                sentence = f"intent {intent_id} was reserved and released already: nothing taken"
            else:
                sentence = f"intent {intent_id} already holds its reservation ({entry.state})"
        return ReserveResult(
            ok,
            outcome,  # type: ignore[arg-type]
            detail,
            sentence,
            intent_id=intent_id,
            market=market,
            symbol=symbol,
            amount_usdt=amount_usdt_exact,
            budget_max_usdt=max_usdt,
            concurrency_limit=limit,
            inuse_usdt=inuse,
            concurrency=conc,
            entry=entry,
        )

    def commit(self, intent_id: str, *, now_ms: int | None = None) -> CommitResult:
        """``pending -> committed`` (S4 accepted). Idempotent; a released one is refused."""
        out = self._commit(
            keys=[self.keys.ledger, self.keys.ledger_pending],
            args=[intent_id, _now_ms() if now_ms is None else int(now_ms)],
        )
        status = _text(out[0])
        entry = _entry(out[1]) if len(out) > 1 else None
        ok = status in ("committed", "already_committed")
        return CommitResult(ok, status, intent_id, entry)

    def release(
        self,
        intent_id: str,
        reason: str,
        *,
        now_ms: int | None = None,
        symbol: str | None = None,
    ) -> ReleaseResult:
        """Give back the budget and slot of a pending or committed reservation, atomically.

        Idempotent: releasing twice frees once. ``symbol`` (the reservation's) saves a read;
        without it the entry is read first to find the symbol's counter.
        """
        k = self.keys
        now = _now_ms() if now_ms is None else int(now_ms)
        if symbol is None:
            found = _entry(self._client.hget(k.ledger, intent_id))
            if found is None:
                return ReleaseResult(False, "unknown", intent_id)
            symbol = found.symbol
        for _ in range(3):
            out = self._release(
                keys=[
                    k.ledger,
                    k.ledger_pending,
                    k.ledger_released,
                    k.budget_inuse("FUT"),
                    k.budget_inuse("SPOT"),
                    k.concurrency(symbol),
                ],
                args=[intent_id, reason, now, symbol],
            )
            status = _text(out[0])
            entry = _entry(out[1]) if len(out) > 1 else None
            if status == "wrong_symbol":
                assert entry is not None
                symbol = entry.symbol
                continue
            if status == "released":
                inuse_raw, conc_raw, before = (_text(x) for x in out[2:5])
                return ReleaseResult(
                    True,
                    "released",
                    intent_id,
                    before,
                    entry,
                    maybe_usdt(units_of(inuse_raw)),
                    count_of(conc_raw),
                )
            return ReleaseResult(False, status, intent_id, entry=entry)
        raise RuntimeError(f"release of {intent_id}: the ledger entry keeps changing symbol")

    def self_heal(
        self,
        now_ms: int,
        pending_max_age_ms: int,
        *,
        released_retention_ms: int | None = DAY_MS,
        symbols: Sequence[str] = (),
    ) -> list[Correction]:
        """Spec §7 quota self-heal, in one atomic script; every change comes back as a value.

        Releases ``pending`` reservations older than ``pending_max_age_ms`` (reason
        ``SELF_HEAL.STALE_PENDING``), repairs the indexes, and sets every counter that
        disagrees with the unreleased ledger entries (hand edits, a crash between steps) to the
        ledger's value. Then prunes released entries older than ``released_retention_ms``
        (``None``: keep them); the retention must outlast any retry of an intent id, since a
        pruned id could be reserved again. ``symbols``: counters to check beyond those the
        ledger knows (`risk:symbols`), e.g. the configured symbols.
        """
        k = self.keys
        known = {_text(s) for s in self._client.smembers(k.risk_symbols)} | set(symbols)
        for _ in range(5):
            names = sorted(known)
            out = self._heal(
                keys=[
                    k.ledger,
                    k.ledger_pending,
                    k.ledger_released,
                    k.budget_inuse("FUT"),
                    k.budget_inuse("SPOT"),
                    k.risk_symbols,
                    *(k.concurrency(s) for s in names),
                ],
                args=[
                    int(now_ms),
                    int(now_ms) - int(pending_max_age_ms),
                    "SELF_HEAL.STALE_PENDING",
                    *names,
                ],
            )
            if _text(out[0]) == "retry":
                known |= {_text(s) for s in out[1]}
                continue
            corrections = [msgspec.json.decode(_text(c), type=Correction) for c in out[1]]
            if released_retention_ms is not None:
                self.prune_released(int(now_ms) - int(released_retention_ms))
            return corrections
        raise RuntimeError("self-heal: the set of symbols kept changing")

    def prune_released(self, released_before_ms: int, *, batch: int = 1000) -> int:
        """Delete released entries released before ``released_before_ms``; returns how many."""
        total = 0
        while True:
            deleted, seen = self._prune(
                keys=[self.keys.ledger, self.keys.ledger_released],
                args=[int(released_before_ms), batch],
            )
            total += int(deleted)
            if int(seen) < batch:
                return total

    def snapshot(self) -> RiskSnapshot:
        """Counters per market and symbol, and every ledger entry, read atomically."""
        k = self.keys
        known = {_text(s) for s in self._client.smembers(k.risk_symbols)}
        while True:
            names = sorted(known)
            fut, spot, members, conc, flat = self._snapshot(
                keys=[
                    k.ledger,
                    k.budget_inuse("FUT"),
                    k.budget_inuse("SPOT"),
                    k.risk_symbols,
                    *(k.concurrency(s) for s in names),
                ],
            )
            now_known = {_text(s) for s in members}
            if now_known <= known:
                break
            known |= now_known
        flat = [_text(x) for x in flat]
        return RiskSnapshot(
            inuse_raw={"FUT": _text(fut), "SPOT": _text(spot)},
            concurrency_raw={s: _text(v) for s, v in zip(names, conc, strict=True)},
            entries={
                i: msgspec.json.decode(raw, type=LedgerEntry)
                for i, raw in zip(flat[::2], flat[1::2], strict=True)
            },
        )
