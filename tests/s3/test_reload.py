"""RCU hot reload: verify off to the side, swap in one assignment, reject bad bundles while the
old one keeps serving, keep the last good bundle on disk."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from s3.config.bundle import checksum_files, read_bundle_files
from s3.config.reload import ActivePointer, BundleDoc, DirectorySource, Reloader
from s3.core.decide import decide
from s3.core.model import build_model
from s3.core.types import DecisionInput, MarketState

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "rulesets" / "default"
BASE = json.loads((DEFAULT / "examples" / "btc_buy_real.json").read_text())


def make_dir(tmp_path: Path, name: str = "bundle") -> Path:
    root = tmp_path / name
    shutil.copytree(DEFAULT, root, ignore=shutil.ignore_patterns("cases", "examples"))
    return root


def bump(root: Path, rev: int, extra_rule: str = "") -> None:
    manifest = root / "bundle.toml"
    manifest.write_text(
        manifest.read_text()
        .replace("rev = 1\n", f"rev = {rev}\n", 1)
        .replace(f"rev = {rev - 1}\n", f"rev = {rev}\n", 1)
    )
    if extra_rule:
        (root / "zz_extra.rule").write_text(extra_rule)


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, detail: dict[str, Any]) -> None:
        self.items.append((kind, detail))


def test_startup_apply_unchanged_and_new_rev(tmp_path: Path) -> None:
    root = make_dir(tmp_path)
    events = Events()
    reloader = Reloader(None, DirectorySource(root), cache_dir=tmp_path / "cache", on_event=events)
    registry = reloader.start_registry()
    assert registry.current.rev == 1 and events.items[0][0] == "CONFIG_APPLIED"
    assert reloader.check_once().status == "unchanged"
    bump(root, 2, 'rule X-1 "extra" when mid > 0 then tp_mult *= 1.01\n')
    result = reloader.check_once("cfg:events")
    assert (result.status, result.rev) == ("applied", 2)
    assert registry.current.rev == 2 and "X-1" in registry.current.ruleset.rule_ids
    assert events.items[-1] == (
        "CONFIG_APPLIED",
        {
            "bundle_id": "default",
            "rev": 2,
            "previous_rev": 1,
            "checksum": registry.current.checksum,
            "reason": "cfg:events",
        },
    )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            "rule X-1 when mid > then skip_entry\n",
            "E101 expected a value, found 'then' in rule X-1",
        ),
        (
            'rule X-1 when mid == "x" then skip_entry\n',
            'E204 cannot compare mid (number) with "x" (string)',
        ),
        ("rule R-001 when mid > 0 then skip_entry\n", "E207 rule id 'R-001' is used twice"),
    ],
)
def test_a_bad_bundle_is_rejected_and_the_old_one_keeps_serving(
    tmp_path: Path, extra: str, needle: str
) -> None:
    root = make_dir(tmp_path)
    events = Events()
    reloader = Reloader(None, DirectorySource(root), on_event=events)
    registry = reloader.start_registry()
    old = registry.current
    bump(root, 2, extra)
    result = reloader.check_once()
    assert result.status == "rejected" and any(needle in r for r in result.reasons), result.reasons
    assert registry.current is old
    kind, detail = events.items[-1]
    assert kind == "CONFIG_REJECTED" and detail["rev"] == 2 and detail["serving_rev"] == 1
    assert any(needle in e for e in detail["errors"])
    assert reloader.check_once().reasons == ["already rejected"]  # polling does not re-log it


def test_missing_field_and_unknown_symbol_filter(tmp_path: Path) -> None:
    root = make_dir(tmp_path)
    reloader = Reloader(None, DirectorySource(root))
    registry = reloader.start_registry()
    bump(root, 2)
    text = (root / "bundle.toml").read_text()
    (root / "bundle.toml").write_text(text.replace('step_size = "0.001"\n', "", 1))
    result = reloader.check_once()
    assert result.status == "rejected" and any(
        "symbols.BTCUSDT.step_size: field required" in r for r in result.reasons
    )
    (root / "bundle.toml").write_text(
        text.replace('market_max_qty = "120"', 'market_max_qty = "120"\ntick_sizes = "1"')
    )
    result = reloader.check_once("cfg:events")
    assert any(
        "symbols.BTCUSDT.tick_sizes: extra inputs are not permitted" in r for r in result.reasons
    )
    assert registry.current.rev == 1


class FlakySource:
    """A source whose pointer or document can be corrupted on command."""

    def __init__(self, root: Path):
        self.inner = DirectorySource(root)
        self.down = False
        self.bad_checksum = False

    def active(self) -> ActivePointer | None:
        if self.down:
            raise ConnectionError("store unreachable")
        return self.inner.active()

    def fetch(self, bundle_id: str, rev: int) -> BundleDoc | None:
        doc = self.inner.fetch(bundle_id, rev)
        if doc is not None and self.bad_checksum:
            files = dict(doc.files)
            files["bundle.toml"] += "\n# tampered\n"
            return BundleDoc(
                doc.bundle_id, doc.rev, doc.checksum, files
            )  # checksum no longer matches
        return doc


def test_bad_checksum_is_rejected(tmp_path: Path) -> None:
    root = make_dir(tmp_path)
    source = FlakySource(root)
    reloader = Reloader(None, source)
    registry = reloader.start_registry()
    bump(root, 2)
    source.bad_checksum = True
    result = reloader.check_once()
    assert result.status == "rejected" and result.reasons[0].startswith("checksum mismatch")
    assert registry.current.rev == 1


def test_restart_while_the_store_is_down_serves_the_last_good_copy(tmp_path: Path) -> None:
    root = make_dir(tmp_path)
    cache = tmp_path / "cache"
    Reloader(None, DirectorySource(root), cache_dir=cache).start_registry()
    source = FlakySource(root)
    source.down = True
    restarted = Reloader(None, source, cache_dir=cache)
    registry = restarted.start_registry()
    assert registry.current.rev == 1 and registry.current.checksum == checksum_files(
        read_bundle_files(root)
    )
    empty = Reloader(None, source, cache_dir=tmp_path / "nothing")
    with pytest.raises(
        RuntimeError, match="no bundle to serve: cannot read the active pointer: store unreachable"
    ):
        empty.start_registry()


def test_decisions_never_see_a_mix_of_two_bundles(tmp_path: Path) -> None:
    # Rev 1 and rev 2 differ in one rule that fires on the sample; each decision must carry the
    # rules of exactly the rev it reports.
    root = make_dir(tmp_path)
    reloader = Reloader(None, DirectorySource(root))
    registry = reloader.start_registry()
    features = BASE
    expected: dict[int, tuple[str, ...]] = {}

    def once() -> tuple[int, tuple[str, ...]]:
        snap = registry.current  # read once per decision (RCU)
        inp = DecisionInput(
            symbol="BTCUSDT",
            side_hint="BUY",
            features=features,
            now_ms=BASE["ts"] + 100,
            t0_ms=BASE["ts"],
            state=MarketState(kill_switch="OFF", health="GREEN"),
        )
        d = decide(inp, snap, build_model(snap.params.model))
        return d.config_rev, d.rules_fired

    expected[1] = once()[1]
    seen: list[tuple[int, tuple[str, ...]]] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            seen.append(once())
            time.sleep(0.001)  # leave the reloader some of the GIL

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for rev in range(2, 6):
        bump(root, rev, f'rule X-{rev} "r{rev}" when mid > 0 then tp_mult *= 1.01\n')
        assert reloader.check_once().status == "applied"
        expected[rev] = (*expected[1], f"X-{rev}")
    stop.set()
    for t in threads:
        t.join()
    assert len(seen) > 20
    for rev, fired in seen:
        assert tuple(sorted(fired)) == tuple(sorted(expected[rev])), (rev, fired)
