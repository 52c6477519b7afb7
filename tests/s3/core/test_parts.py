"""The smaller parts of the core: ATR(EMA, n), execution hints, and the engine sections of a
bundle (validation errors with the path of the bad field; S3_* defaults)."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from s3.config.bundle import load_dir
from s3.config.settings import Settings
from s3.core import atr, execution
from s3.core.params import ExecParams
from s3.core.types import AtrState

ROOT = Path(__file__).resolve().parents[3]
DEFAULT = ROOT / "rulesets" / "default"


def test_atr_ema_by_hand() -> None:
    s = atr.new_state(3)  # alpha = 2 / (3 + 1) = 0.5
    s = atr.update(s, high=10.0, low=8.0, close=9.0)  # TR 2 (first bar: high - low), seed
    assert (s.atr, s.bars, atr.is_ready(s)) == (2.0, 1, False)
    s = atr.update(s, high=12.0, low=9.5, close=11.0)  # TR max(2.5, 3, 0.5) = 3 -> 0.5*3 + 0.5*2
    assert s.atr == 2.5
    s = atr.update(s, high=11.5, low=7.0, close=8.0)  # TR max(4.5, 0.5, 4) = 4.5 -> 3.5
    assert (s.atr, s.prev_close, s.bars, atr.is_ready(s)) == (3.5, 8.0, 3, True)


@pytest.mark.parametrize(("h", "l", "c"), [(9.0, 10.0, 9.5), (10.0, 8.0, 11.0), (0.0, 0.0, 0.0)])
def test_atr_refuses_what_is_not_a_bar(h: float, l: float, c: float) -> None:  # noqa: E741
    with pytest.raises(ValueError, match="not a bar"):
        atr.update(AtrState(period=14), high=h, low=l, close=c)


def test_execution_hints() -> None:
    p = ExecParams(
        slip_bp_max=5.0,
        max_slices=5,
        maker_wait_a_ms=500,
        maker_wait_b_ms_bps=2.0,
        maker_wait_c_ms=100,
        maker_wait_max_ms=10_000,
    )
    small = execution.hints("MakerThenTaker", 400.0, 50_000.0, 2.0, p)
    assert (small.policy, small.slices, small.slip_bps_est) == ("MakerThenTaker", 1, 1.0)
    # 400 USDT into 50 USDT of top depth at 2 bps: 8 depths -> 8 bps > 5: 5 slices of 1.6 bps.
    big = execution.hints("Taker", 400.0, 50.0, 2.0, p)
    assert (big.policy, big.slices, big.slip_bps_est) == ("Sliced", 5, 1.6)
    worse = execution.hints("Taker", 4000.0, 50.0, 2.0, p)
    assert (worse.policy, worse.slices) == ("Limit", 1)
    assert execution.hints("Maker", 4000.0, 50.0, 2.0, p).policy == "Maker"
    # T_wait = 500 + 2 / 0.5 + 100 * ln(10000) = 1425.03 ms
    assert execution.maker_wait_ms(0.5, 10_000.0, p) == 1425
    assert execution.maker_wait_ms(0.0, 10_000.0, p) == 10_000


def copy_default(tmp_path: Path, replace: tuple[str, str] | None = None, append: str = "") -> Path:
    root = tmp_path / "bundle"
    shutil.copytree(DEFAULT, root)
    manifest = root / "bundle.toml"
    text = manifest.read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(replace[0], replace[1])
    manifest.write_text(text + append)
    return root


@pytest.mark.parametrize(
    ("replace", "code", "message"),
    [
        (
            ('tick_size = "0.10"', 'tick_size = "-0.10"'),
            "E303",
            "symbols.BTCUSDT.tick_size: input should be greater than 0",
        ),
        (
            ("leverage = 20\n", "leverage = 500\n"),
            "E303",
            "sizing.leverage: input should be less than or equal to 125",
        ),
        (
            ('default_policy = "MakerThenTaker"', 'default_policy = "Yolo"'),
            "E303",
            "execution.default_policy: input should be 'Maker', 'MakerThenTaker' or 'Taker'",
        ),
        (
            ("spread_bps = -2.0", "spred_bps = -2.0"),
            "E308",
            "model.weights.spred_bps: the model reads 'spred_bps', which is not a numeric feature",
        ),
        (
            ("[symbols.ETHUSDT]", "[symbols.ethusdt]"),
            "E303",
            "symbols: value error, symbol 'ethusdt' must be upper-case letters and digits",
        ),
        (
            (
                "max_feature_age_ms = 5_000",
                'max_feature_age_ms = 5_000\nwindows = [{ start = "10:00", end = "09:00" }]',
            ),
            "E303",
            "gates.windows.0: value error, window start 10:00 is not before its end 09:00",
        ),
        (
            ('max_price = "4529764"', 'max_price = "500"'),
            "E303",
            "symbols.BTCUSDT: value error, max_price 500 is not above min_price 556.80",
        ),
        (
            (
                'max_price = "306177"\npercent_price_up = "1.0500"',
                'max_price = "306177"\npercent_price_up = "0.9"',
            ),
            "E303",
            "symbols.ETHUSDT.percent_price_up: input should be greater than or equal to 1",
        ),
        (
            (
                "{ notional_floor = 12_000_000, notional_cap = 70_000_000",
                "{ notional_floor = 13_000_000, notional_cap = 70_000_000",
            ),
            "E303",
            "symbols.BTCUSDT: value error, brackets[5].notional_floor 13000000 is not the cap of "
            "bracket 4, 12000000",
        ),
    ],
)
def test_engine_sections_errors_name_the_field(
    tmp_path: Path, replace: tuple[str, str], code: str, message: str
) -> None:
    result = load_dir(copy_default(tmp_path, replace))
    assert result.snapshot is None
    found = [(d.code, d.message) for d in result.diagnostics if d.is_error]
    assert found == [(code, message.replace("value error, ", ""))]
    (diag,) = [d for d in result.diagnostics if d.is_error]
    assert diag.span is not None and diag.span.path.endswith("bundle.toml") and diag.span.line > 1


def test_leverage_above_the_first_bracket_is_refused(tmp_path: Path) -> None:
    root = copy_default(tmp_path)
    manifest = root / "bundle.toml"
    text = manifest.read_text()
    first = "notional_cap = 50_000, initial_leverage = 125"
    manifest.write_text(text.replace(first, "notional_cap = 50_000, initial_leverage = 10", 1))
    result = load_dir(root)
    assert result.snapshot is None
    assert [(d.code, d.message) for d in result.diagnostics if d.is_error] == [
        (
            "E303",
            "symbols.BTCUSDT: leverage 20 is above 10, the most its first leverage bracket allows",
        )
    ]


def test_the_default_bundle_carries_the_real_filters_and_brackets() -> None:
    snap = load_dir(DEFAULT).snapshot
    assert snap is not None
    btc, eth = (snap.params.symbols[s].filters for s in ("BTCUSDT", "ETHUSDT"))
    assert (btc.min_price, btc.max_price, eth.min_price, eth.max_price) == (
        Decimal("556.80"),
        Decimal("4529764"),
        Decimal("39.86"),
        Decimal("306177"),
    )
    for f in (btc, eth):
        assert (f.percent_price_up, f.percent_price_down) == (Decimal("1.05"), Decimal("0.95"))
        assert len(f.brackets) == 12 and f.brackets[0].initial_leverage == 125
        # Binance's maintenance amounts: cum_n = cum_(n-1) + floor_n x (mmr_n - mmr_(n-1))
        for lo, hi in zip(f.brackets, f.brackets[1:], strict=False):
            assert hi.notional_floor == lo.notional_cap
            assert hi.cum == lo.cum + hi.notional_floor * (
                hi.maint_margin_ratio - lo.maint_margin_ratio
            )


def test_settings_supply_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_default(
        tmp_path, ("spread_bp_limit = 3.0            # S3_SPREAD_BP_LIMIT_DEFAULT\n", "")
    )
    monkeypatch.setenv("S3_SPREAD_BP_LIMIT_DEFAULT", "2.25")
    snap = load_dir(root, Settings()).snapshot
    assert snap is not None and snap.params.gates.spread_bp_limit == 2.25
    monkeypatch.setenv("S3_SPREAD_BP_LIMIT_DEFAULT", "-1")
    with pytest.raises(Exception, match="spread_bp_limit_default"):
        Settings()


def test_bundle_values_win_over_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_SPREAD_BP_LIMIT_DEFAULT", "9")
    snap = load_dir(DEFAULT, Settings()).snapshot
    assert snap is not None and snap.params.gates.spread_bp_limit == 3.0


def test_windows_are_parsed(tmp_path: Path) -> None:
    root = copy_default(
        tmp_path,
        (
            "max_feature_age_ms = 5_000",
            'max_feature_age_ms = 5_000\nwindows = [{ days = ["Mon", "Tue"], start = "08:00", end = "24:00" }]',
        ),
    )
    snap = load_dir(root).snapshot
    assert snap is not None
    (w,) = snap.params.gates.windows
    assert (w.days, w.start_min, w.end_min) == ((0, 1), 480, 1440)


def test_checksum_changes_with_content(tmp_path: Path) -> None:
    a = load_dir(copy_default(tmp_path)).snapshot
    b_root = tmp_path / "b"
    shutil.copytree(DEFAULT, b_root)
    (b_root / "risk.rule").write_text((b_root / "risk.rule").read_text() + "\n# note\n")
    b = load_dir(b_root).snapshot
    assert a is not None and b is not None and a.checksum != b.checksum and len(a.checksum) == 64
