"""A reload builds the new revision off the serving path (`s3.config.offpath`): in a child
process, with a time limit, and the snapshot handed back behaves exactly as one built in
process."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from s3.adapters.sqlite_store import SqliteStore
from s3.config import reload as reload_mod
from s3.config.bundle import checksum_files, read_bundle_files
from s3.config.offpath import build_off_path
from s3.config.reload import BundleDoc, Reloader, compile_doc
from s3.service import StoreSource, publish
from tests.security.robust_helpers import DEFAULT, EXAMPLE

FEATURES = ["spread_bps", "vol_1m_bps", "imbalance_top1", "trade_flow_1m", "ret_1m"]


def big_bundle(tmp_path: Path, rules: int, rev: int = 1) -> Path:
    root = tmp_path / f"big{rules}-{rev}"
    shutil.copytree(DEFAULT, root, ignore=shutil.ignore_patterns("cases", "examples"))
    manifest = root / "bundle.toml"
    manifest.write_text(manifest.read_text().replace("rev = 1\n", f"rev = {rev}\n", 1))
    rng = random.Random(rules)
    text = []
    for i in range(rules):
        a = round(rng.uniform(0, 1), 6)
        text.append(
            f'rule G-{i:05d} "generated {i}"\n  when {FEATURES[i % 5]} > {a} and '
            f"spread_bps < {a + 1.5}\n  then size_mult *= {round(rng.uniform(0.9, 1.1), 3)}\n"
        )
    (root / "zz_generated.rule").write_text("\n".join(text))
    return root


def doc_of(root: Path, rev: int = 1) -> BundleDoc:
    files = read_bundle_files(root)
    return BundleDoc("default", rev, checksum_files(files), files)


def snapshots() -> list[dict[str, Any]]:
    rng = random.Random(3)
    out = []
    for _ in range(200):
        f = dict(EXAMPLE)
        for name in FEATURES:
            f[name] = round(rng.uniform(-0.2, 1.6), 4)
        f["side"] = rng.choice(["BUY", "SELL"])
        out.append(f)
    return out


def same(outcome: Any) -> str:
    """An outcome's text, the temporary directory each build compiles in left out."""
    return re.sub(r"/[^' ]*/s3-bundle-[^/]+/", "", repr(outcome))


def test_startup_offpath_build_equals_the_in_process_build(tmp_path: Path) -> None:
    doc = doc_of(big_bundle(tmp_path, 300))
    off, reasons = build_off_path(doc, None)
    ref, _ = compile_doc(doc, None)
    assert reasons == [] and off is not None and ref is not None
    assert (off.bundle_id, off.rev, off.checksum, off.params) == (
        ref.bundle_id,
        ref.rev,
        ref.checksum,
        ref.params,
    )
    assert off.ruleset.rule_ids == ref.ruleset.rule_ids and len(off.ruleset.rules) == 331
    for features in snapshots():
        snap, problems = ref.ruleset.schema.validate(features)
        assert not problems
        assert same(off.ruleset.evaluate(snap)) == same(ref.ruleset.evaluate(snap))
    snap, _ = ref.ruleset.schema.validate(snapshots()[0])
    traced = off.ruleset.evaluate(snap, trace=True)
    assert traced.trace and same(traced) == same(ref.ruleset.evaluate(snap, trace=True))


def test_startup_offpath_build_rejects_with_the_dsl_diagnostics(tmp_path: Path) -> None:
    root = big_bundle(tmp_path, 3)
    (root / "zz_bad.rule").write_text("rule Z-1 when mid > then skip_entry\n")
    snap, reasons = build_off_path(doc_of(root), None)
    assert snap is None
    assert any("E101 expected a value, found 'then' in rule Z-1" in r for r in reasons), reasons


def test_startup_offpath_build_past_its_time_limit_is_stopped(tmp_path: Path) -> None:
    snap, reasons = build_off_path(doc_of(big_bundle(tmp_path, 500)), None, timeout_s=0.05)
    assert snap is None
    assert reasons == [
        "the build took longer than 0.05 s and was stopped (S3_BUNDLE_BUILD_TIMEOUT_S)"
    ]


def test_startup_a_reload_never_builds_in_the_serving_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(str(tmp_path / "s3.db"))
    publish(store, None, None, big_bundle(tmp_path, 5, rev=1), reason="first")
    reloader = Reloader(
        None,
        StoreSource(store),
        cache_dir=tmp_path / "cache",
        build=lambda doc, s: build_off_path(doc, s),
    )
    assert reloader.start_registry().current.rev == 1  # startup: in process, nothing serves yet

    def in_process(*_: Any, **__: Any) -> Any:
        raise AssertionError("a reload built the bundle in the serving process")

    monkeypatch.setattr(reload_mod, "compile_doc", in_process)  # this process only
    publish(store, None, None, big_bundle(tmp_path, 50, rev=2), reason="second")
    result = reloader.check_once("poll")
    assert result.status == "applied", result
    assert reloader.registry is not None and len(reloader.registry.current.ruleset.rules) == 81
    features = {**EXAMPLE, "spread_bps": 0.3}
    snap, problems = reloader.registry.current.ruleset.schema.validate(features)
    assert not problems and reloader.registry.current.ruleset.evaluate(snap).fired
    store.close()
    assert json.dumps(result.reasons) == "[]"
