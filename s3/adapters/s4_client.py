"""The S4 client (spec §0, §8): `POST {S3_S4_URL}/orders` with the intent id as idempotency key,
a timeout and bounded retries. The outcome is a value: accepted, rejected, or unknown (timeout or
repeated failure, when S4 may or may not have the order)."""

from __future__ import annotations

import time
from typing import Any, Literal

import httpx
import msgspec

from s3.core.types import OrderIntent


class OrderCmdRequest(msgspec.Struct, frozen=True):
    """What S4 receives (and what `ord:cmd:{SYMBOL}` carries on the dual track)."""

    intent_id: str
    market: str
    symbol: str
    side: str
    qty: str
    policy: str
    px: str | None = None
    sl_px: str | None = None
    tp_px: str | None = None
    maker_wait_ms: int | None = None
    slices: int = 1
    oco: list[dict[str, Any]] = []

    @classmethod
    def from_intent(cls, i: OrderIntent) -> OrderCmdRequest:
        return cls(
            intent_id=i.intent_id,
            market=i.market,
            symbol=i.symbol,
            side=i.side,
            qty=str(i.qty),
            policy=i.exec_policy,
            px=str(i.entry_px),
            sl_px=str(i.sl_px),
            tp_px=str(i.tp_px),
            maker_wait_ms=i.maker_wait_ms,
            slices=i.slices,
            oco=[
                {
                    "kind": leg.kind,
                    "price": str(leg.price),
                    "qty": str(leg.qty),
                    "stop_price": str(leg.stop_price) if leg.stop_price is not None else None,
                }
                for leg in i.oco
            ],
        )


class SubmitResult(msgspec.Struct, frozen=True):
    outcome: Literal["accepted", "rejected", "unknown"]
    detail: str
    attempts: int
    status: int | None = None


class S4Client:
    def __init__(
        self, base_url: str, *, timeout_s: float = 2.0, retries: int = 2, backoff_s: float = 0.05
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.Client(timeout=timeout_s)

    def submit(self, order: OrderCmdRequest) -> SubmitResult:
        """Accepted (2xx), rejected (4xx: S4 said no), or unknown (timeouts and 5xx after retries).

        Retries reuse the same idempotency key, so S4 sees one order however often we ask.
        """
        body = msgspec.json.encode(order)
        headers = {"Idempotency-Key": order.intent_id, "Content-Type": "application/json"}
        last = "no attempt"
        for attempt in range(1, self.retries + 2):
            try:
                r = self._http.post(f"{self.base_url}/orders", content=body, headers=headers)
            except httpx.TimeoutException:
                last = f"timeout after {self.timeout_s:g} s"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= r.status_code < 300:
                    return SubmitResult("accepted", r.text[:200], attempt, r.status_code)
                if 400 <= r.status_code < 500:
                    return SubmitResult(
                        "rejected", f"HTTP {r.status_code}: {r.text[:200]}", attempt, r.status_code
                    )
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            if attempt <= self.retries:
                time.sleep(self.backoff_s * attempt)
        return SubmitResult("unknown", last, self.retries + 1)

    def close(self) -> None:
        self._http.close()
