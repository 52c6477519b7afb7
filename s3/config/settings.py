"""`S3_*` environment settings (spec §11), validated by pydantic with readable errors.

Only the edges (CLI, service) read the environment; the decision core receives plain values.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process settings. Bundle values win over these; these are the spec's defaults."""

    model_config = SettingsConfigDict(env_prefix="S3_", extra="ignore", frozen=True)

    symbols: str = "BTCUSDT,ETHUSDT"
    """Comma-separated symbols the worker consumes."""
    max_funding_abs: float = Field(0.0005, ge=0)
    """Default |funding_next| limit per 8 h for the funding gate."""
    spread_bp_limit_default: float = Field(3.0, gt=0)
    """Default spread gate, in bps."""
    depth_top1_usdt_min_default: float = Field(200.0, ge=0)
    """Default top-of-book depth gate, in USDT."""
    leverage_default: int = Field(20, ge=1, le=125)
    """Default futures leverage."""
    margin_base_usdt: float = Field(20.0, gt=0)
    """Futures margin per entry at size_mult 1 (spec §2: margin = 20 × size_mult)."""
    max_loss_usdt: float = Field(1.2, gt=0)
    """Loss cap at the stop, fees included (spec Part B4)."""
    atr_mult: float = Field(1.5, gt=0)
    """SL distance in ATRs before the loss cap."""
    concurrent_entries_per_market: int = Field(1, ge=0)
    """Concurrent entries allowed per symbol."""
    config_poll_sec: float = Field(5.0, gt=0)
    """Bundle poll period for hot reload."""

    def symbol_list(self) -> tuple[str, ...]:
        return tuple(s.strip().upper() for s in self.symbols.split(",") if s.strip())
