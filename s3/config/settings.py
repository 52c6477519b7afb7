"""`S3_*` environment settings (spec §11), validated by pydantic with readable errors.

Only the edges (CLI, service) read the environment; the decision core receives plain values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "S3_"
DEFAULT_BUNDLE_DIR = "rulesets/default"
# the source checkout this module runs from (an editable install); a wheel has no rulesets/
_CHECKOUT_BUNDLE = Path(__file__).resolve().parents[2] / DEFAULT_BUNDLE_DIR


class Settings(BaseSettings):
    """Process settings. Bundle values win over these; these are the spec's defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

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

    # -- the service (issue 6) -------------------------------------------------------------------
    redis_addresses: str | None = None
    """host:port[,host:port...]; unset: the service starts its own redis-server. Several: Cluster."""
    redis_timeout_s: float = Field(2.0, gt=0)
    """Socket and connect timeout of Redis calls."""
    redis_prefix: str = ""
    """Optional prefix of every key S3 writes and reads."""
    db_arango_uri: str | None = None
    """ArangoDB URL (http://host:8529/dbname); unset: the embedded SQLite store."""
    db_arango_user: str = "root"
    db_arango_pass: str = ""
    sqlite_path: str = "var/s3.db"
    """The embedded store's file."""
    bundle_dir: str = DEFAULT_BUNDLE_DIR
    """The bundle published into an empty store at start (the embedded default). The default,
    `rulesets/default`, is looked up in the working directory, then in the source checkout the
    package runs from, so `s3 serve` works from any directory of a clone."""
    cache_dir: str = "var/bundle-cache"
    """Where the last good bundle is kept for restarts while the store is down."""
    api_token: str | None = None
    """Bearer token for /decide and the admin routes."""
    auth_disabled: bool = False
    """Serve without a token (local use only); refused unless set explicitly."""
    s4_url: str | None = None
    """S4's base URL; unset: intents go to ord:cmd:{SYMBOL} only."""
    s4_timeout_s: float = Field(2.0, gt=0)
    s4_retries: int = Field(2, ge=0, le=10)
    dual_track: bool = True
    """When S4 fails or times out, also write the command to ord:cmd:{SYMBOL}."""
    decide_on_loop: Literal["auto", "on", "off"] = "auto"
    """Where `POST /decide` runs until S4: on the event loop (no thread hand-offs; a Redis or
    store stall holds every request of the process for up to its timeout) or on a worker thread.
    `auto`: on the loop with the embedded SQLite store, on a thread with ArangoDB (network round
    trips). S4 submission always runs on a worker thread."""
    bundle_build: Literal["process", "thread"] = "process"
    """How a reload builds a new revision: in a child process (off the serving path: decisions
    never wait on it) or on the reload thread of the serving process."""
    bundle_build_timeout_s: float = Field(120.0, gt=0)
    """A reload's build that takes longer is stopped and the revision rejected (process only)."""
    bundle_build_nice: int = Field(0, ge=0, le=19)
    """The build child's niceness (process only): above 0 it yields the CPU to decisions, at
    the cost of a slower reload on a busy machine."""
    http_request_timeout_s: float = Field(10.0, gt=0)
    """`s3 serve`: time to receive a whole request (headers and body) from its first byte, or
    from the connection's opening; past it a 408 and the connection closed."""
    http_keepalive_s: int = Field(5, ge=1)
    """`s3 serve`: an idle keep-alive connection is closed after this long."""
    stream_group: str = "s3"
    stream_maxlen: int = Field(100_000, ge=100)
    heartbeat_sec: float = Field(10.0, gt=0)
    stale_after_sec: float = Field(15.0, gt=0)
    selfheal_sec: float = Field(60.0, gt=0)
    pending_max_age_ms: int = Field(120_000, gt=0)

    @field_validator("bundle_dir")
    @classmethod
    def _default_bundle_anywhere(cls, v: str) -> str:
        if v == DEFAULT_BUNDLE_DIR and not Path(v).is_dir() and _CHECKOUT_BUNDLE.is_dir():
            return str(_CHECKOUT_BUNDLE)
        return v

    def decides_on_loop(self) -> bool:
        return self.decide_on_loop == "on" or (
            self.decide_on_loop == "auto" and not self.db_arango_uri
        )

    def symbol_list(self) -> tuple[str, ...]:
        return tuple(s.strip().upper() for s in self.symbols.split(",") if s.strip())


class SettingsError(ValueError):
    """Invalid `S3_*` environment: the message names each variable, its value and the problem."""


def describe(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable (`S3_CONFIG_POLL_SEC='abc': ...`)."""
    lines = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "?"
        var = ENV_PREFIX + field.upper()
        given = err.get("input")
        shown = f"={given!r}" if isinstance(given, str | int | float) else ""
        msg = err["msg"][0].lower() + err["msg"][1:]
        lines.append(f"{var}{shown}: {msg}")
    return "\n".join(lines)


def load() -> Settings:
    """Settings from the environment; `SettingsError` names every bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
