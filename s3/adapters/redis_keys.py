"""Every Redis key and stream name S3 uses (spec §4), in one place.

Names are the spec's, behind an optional prefix. Under Redis Cluster every risk key carries one
hash tag (`{risk}` by default) so that the reservation scripts, which read and write the budget,
the concurrency counter and the ledger together, touch a single slot. The trade-off: all risk
keys live on one master, so that master carries the whole risk load (a few small keys and a
few commands per decision, far from any limit) and is a single point for risk; other keys
(features, idempotency, streams) spread over the cluster as usual. In standalone mode the tag
is left out and the names are exactly the spec's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = ""
    risk_tag: str = ""
    """``{risk}`` under a cluster (see the module docstring), empty standalone."""

    @classmethod
    def for_mode(cls, *, cluster: bool, prefix: str = "", tag: str = "risk") -> Keys:
        return cls(prefix=prefix, risk_tag="{" + tag + "}" if cluster else "")

    # -- state written by other services (read by S3) -------------------------------------------
    @property
    def kill_switch(self) -> str:
        return f"{self.prefix}prod:kill_switch"

    @property
    def health(self) -> str:
        return f"{self.prefix}prod:health:system:state"

    def feat_last(self, symbol: str) -> str:
        return f"{self.prefix}feat:last:{symbol}"

    def funding_next(self, symbol: str) -> str:
        return f"{self.prefix}funding:next:{symbol}"

    # -- risk (one slot under a cluster) --------------------------------------------------------
    def budget_inuse(self, market: str) -> str:
        name = {"FUT": "fut_margin", "SPOT": "spot_quote"}[market]
        return f"{self.prefix}{self.risk_tag}risk:budget:{name}:inuse"

    def concurrency(self, symbol: str) -> str:
        return f"{self.prefix}{self.risk_tag}risk:concurrency:{symbol}"

    @property
    def ledger(self) -> str:
        """Hash: intent_id -> JSON reservation (market, symbol, amount, state, ts)."""
        return f"{self.prefix}{self.risk_tag}risk:ledger"

    @property
    def ledger_pending(self) -> str:
        """Sorted set: pending intent_ids by reservation time, for self-heal."""
        return f"{self.prefix}{self.risk_tag}risk:ledger:pending"

    @property
    def ledger_released(self) -> str:
        """Sorted set: released intent_ids by release time, for pruning after the retention."""
        return f"{self.prefix}{self.risk_tag}risk:ledger:released"

    @property
    def risk_symbols(self) -> str:
        """Set: every symbol that has a concurrency counter, so self-heal can check them all."""
        return f"{self.prefix}{self.risk_tag}risk:symbols"

    # -- config, idempotency, jobs --------------------------------------------------------------
    @property
    def cfg_rcu_rev(self) -> str:
        return f"{self.prefix}cfg:rcu:rev"

    def idem(self, intent_id: str) -> str:
        return f"{self.prefix}idem:order:{intent_id}"

    def lease(self, job: str) -> str:
        return f"{self.prefix}s3:lease:{job}"

    # -- streams --------------------------------------------------------------------------------
    def feat_events(self, symbol: str) -> str:
        return f"{self.prefix}feat:events:{symbol}"

    @property
    def feat_dead_letter(self) -> str:
        return f"{self.prefix}feat:events:dlq"

    @property
    def sig_events(self) -> str:
        return f"{self.prefix}sig:events"

    def ord_cmd(self, symbol: str) -> str:
        return f"{self.prefix}ord:cmd:{symbol}"

    @property
    def cfg_events(self) -> str:
        return f"{self.prefix}cfg:events"
