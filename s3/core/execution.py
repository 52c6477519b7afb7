"""Execution hints (spec §6): slippage estimate, the policy switch above `slip_bp_max`, slicing,
and the maker wait `T_wait = a + b/spread + c·log(depth_top1)`."""

from __future__ import annotations

import math

import msgspec

from s3.core.params import ExecParams


class ExecHints(msgspec.Struct, frozen=True):
    policy: str
    slices: int
    slip_bps_est: float
    maker_wait_ms: int
    note: str


def estimate_slip_bps(notional_usdt: float, depth_top1_usdt: float, spread_bps: float) -> float:
    """Half the spread to cross the book, scaled by how many top-of-book depths the order eats."""
    levels = notional_usdt / depth_top1_usdt if depth_top1_usdt > 0 else math.inf
    return (spread_bps / 2.0) * max(1.0, levels)


def maker_wait_ms(spread_bps: float, depth_top1_usdt: float, params: ExecParams) -> int:
    if spread_bps <= 0 or depth_top1_usdt <= 0:
        return params.maker_wait_max_ms
    t = (
        params.maker_wait_a_ms
        + params.maker_wait_b_ms_bps / spread_bps
        + params.maker_wait_c_ms * math.log(depth_top1_usdt)
    )
    return int(min(max(t, 0.0), params.maker_wait_max_ms))


def hints(
    policy: str, notional_usdt: float, depth_top1_usdt: float, spread_bps: float, params: ExecParams
) -> ExecHints:
    """Hints for an order of ``notional_usdt`` under ``policy``; taking policies may be sliced.

    ``depth_top1_usdt`` must be > 0: the depth gate refuses an empty top of book."""
    if not depth_top1_usdt > 0:
        raise ValueError(f"execution hints: top-1 depth must be > 0, found {depth_top1_usdt!r}")
    slip = estimate_slip_bps(notional_usdt, depth_top1_usdt, spread_bps)
    wait = maker_wait_ms(spread_bps, depth_top1_usdt, params)
    if policy == "Maker" or slip <= params.slip_bp_max:
        return ExecHints(policy, 1, slip, wait, f"estimated slippage {slip:.3g} bps")
    slices = min(params.max_slices, math.ceil(notional_usdt / depth_top1_usdt))
    per_slice = estimate_slip_bps(notional_usdt / slices, depth_top1_usdt, spread_bps)
    if per_slice <= params.slip_bp_max:
        return ExecHints(
            "Sliced",
            slices,
            per_slice,
            wait,
            f"estimated slippage {slip:.3g} bps > slip_bp_max {params.slip_bp_max:g}: "
            f"{slices} slices of {per_slice:.3g} bps",
        )
    return ExecHints(
        "Limit",
        1,
        slip,
        wait,
        f"estimated slippage {slip:.3g} bps > slip_bp_max {params.slip_bp_max:g} even in "
        f"{slices} slices: a limit order",
    )
