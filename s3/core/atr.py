"""ATR(EMA, n) from bar fields (spec §6): a pure step function over an explicit state.

The caller keeps one `AtrState` per symbol between bars; the decision reads it as an input, so
nothing about it is hidden from a replay.
"""

from __future__ import annotations

from s3.core.types import AtrState


def new_state(period: int) -> AtrState:
    if period < 1:
        raise ValueError(f"ATR period must be at least 1, got {period}")
    return AtrState(period=period)


def update(state: AtrState, *, high: float, low: float, close: float) -> AtrState:
    """Fold one bar in: TR = max(high − low, |high − prev_close|, |low − prev_close|),
    ATR_t = α·TR_t + (1 − α)·ATR_{t−1} with α = 2 / (n + 1), seeded with the first bar's TR.

    Raises:
        ValueError: for a bar that is not a bar (high below low, a non-positive price).
    """
    if not (0 < low <= high) or not (low <= close <= high):
        raise ValueError(f"not a bar: high {high}, low {low}, close {close}")
    if state.prev_close is None:
        tr = high - low
    else:
        tr = max(high - low, abs(high - state.prev_close), abs(low - state.prev_close))
    if state.atr is None:
        atr = tr
    else:
        alpha = 2.0 / (state.period + 1)
        atr = alpha * tr + (1.0 - alpha) * state.atr
    return AtrState(period=state.period, atr=atr, prev_close=close, bars=state.bars + 1)


def is_ready(state: AtrState | None) -> bool:
    """An EMA seeded from one bar means little until it has seen ``period`` bars."""
    return (
        state is not None and state.atr is not None and state.bars >= state.period and state.atr > 0
    )
