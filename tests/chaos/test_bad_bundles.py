"""Bundles with every kind of malformation, each published while a good one serves: each is
rejected with its own clear reason (a CONFIG_REJECTED event naming it), the good revision keeps
serving, and the next good revision is taken as usual.

Content faults go through the real store (`s3.service.publish` into SQLite, then the service's
`StoreSource`); faults the store itself refuses to hold (a pointer to a missing revision, a
tampered document) come from a source that serves them anyway, as a damaged or hostile store
would.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3.adapters.sqlite_store import SqliteStore
from s3.config.bundle import checksum_files, read_bundle_files
from s3.config.reload import ActivePointer, BundleDoc, Reloader
from s3.service import StoreSource, publish
from tests.chaos.harness import DEFAULT_BUNDLE, REPORTS, Report, write_bundle
from tests.chaos.invariants import Check

EXAMPLE = json.loads((DEFAULT_BUNDLE / "examples" / "btc_buy_real.json").read_text())


def _manifest(sub: tuple[str, str]) -> Callable[[dict[str, str]], None]:
    def edit(files: dict[str, str]) -> None:
        files["bundle.toml"] = re.sub(sub[0], sub[1], files["bundle.toml"], count=1, flags=re.M)

    return edit


def _rule(text: str, name: str = "zz_bad.rule") -> Callable[[dict[str, str]], None]:
    def edit(files: dict[str, str]) -> None:
        files[name] = text

    return edit


RULE_OK = 'rule Z-1 "ok" priority 1\n  when mid > 0\n  then tp_mult *= 1.01\n'
CONTENT_FAULTS: list[tuple[str, Callable[[dict[str, str]], None], str]] = [
    ("TOML syntax error", _manifest((r"^\[clamp\].*$", "[clamp")), "E302"),
    ("bundle_id missing", _manifest((r'^bundle_id = "default"$', "")), "bundle_id"),
    ("feature of an unknown type", _manifest((r'^mid = \{ type = "number"', 'mid = { type = "decimal"')), "mid"),
    ("clamp min above max", _manifest((r"^size_mult = \{ min = 0.25", "size_mult = { min = 9.0")), "min"),
    ("rule syntax error", _rule('rule Z-1 "x" priority 1\n  when mid >\n  then skip_entry\n'), "E1"),
    ("rule on an unknown feature", _rule(RULE_OK.replace("mid > 0", "midd > 0")), "E201"),
    ("type error in a rule", _rule(RULE_OK.replace("mid > 0", 'mid > "high"')), "E2"),
    ("duplicate rule id", _rule(RULE_OK + "\n" + RULE_OK), "Z-1"),
    ("unknown function", _rule(RULE_OK.replace("mid > 0", "exp(mid) > 0")), "exp"),
    ("a rule file with a NUL byte", _rule(RULE_OK.replace("mid", "m\x00id")), "E1"),
    ("risk budget negative", _manifest((r"^fut_margin_usdt_max = .*$", "fut_margin_usdt_max = -5")), "fut_margin_usdt_max"),
    ("market neither FUT nor SPOT", _manifest((r'^market = "FUT"', 'market = "OPTIONS"')), "market"),
    ("model of an unknown kind", _manifest((r'^kind = "logistic"', 'kind = "oracle"')), "kind"),
    ("unknown engine key", _manifest((r"^\[engine\]$", "[engine]\nturbo = true")), "turbo"),
]  # fmt: skip


@dataclass
class FaultySource:
    """A source that serves what it is given, however wrong."""

    pointer: ActivePointer
    doc: BundleDoc | None
    fail: Exception | None = None

    def active(self) -> ActivePointer | None:
        if self.fail is not None:
            raise self.fail
        return self.pointer

    def fetch(self, bundle_id: str, rev: int) -> BundleDoc | None:
        return self.doc


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, detail: dict[str, Any]) -> None:
        self.items.append((kind, detail))


def test_malformed_bundles_are_rejected_with_their_reason(tmp_path: Path) -> None:
    started = time.monotonic()
    c = Check("bad input", "malformed bundles: each rejected with its reason, rev 1 serves on")
    store = SqliteStore(tmp_path / "s3.db")
    publish(store, None, None, write_bundle(tmp_path, 1), reason="good rev 1")
    events = Events()
    reloader = Reloader(None, StoreSource(store), cache_dir=tmp_path / "cache", on_event=events)
    registry = reloader.start_registry()
    good_files = read_bundle_files(tmp_path / "rev1")
    reasons: dict[str, str] = {}
    rev = 1
    for name, edit, fragment in CONTENT_FAULTS:
        rev += 1
        files = dict(good_files)
        files["bundle.toml"] = re.sub(r"(?m)^rev = \d+", f"rev = {rev}", files["bundle.toml"])
        edit(files)
        before = len(events.items)
        try:
            # what `s3 bundle publish` would refuse to publish, stored as a careless writer would
            store.put_bundle(
                {
                    "bundle_id": "default",
                    "rev": rev,
                    "checksum": checksum_files(files),
                    "files": files,
                    "published_at": int(time.time() * 1000),
                }
            )
            store.set_active("default", rev, checksum_files(files), f"bad: {name}")
        except ValueError as exc:  # the store itself refused it: a clear reason too
            reasons[name] = f"store refused: {exc}"
            c.checked += 1
            continue
        result = reloader.check_once("cfg:events")
        _expect(c, name, result, registry, events.items[before:], fragment, reasons)
    # faults the store would not hold, from a source that serves them anyway
    good = BundleDoc("default", 1, checksum_files(good_files), good_files)
    tampered = dict(good_files, **{"common.rule": good_files["common.rule"] + "\n# edited\n"})
    bumped = dict(good_files)
    bumped["bundle.toml"] = re.sub(r"(?m)^rev = \d+", "rev = 90", bumped["bundle.toml"])
    escaping = dict(bumped, **{"../escape.rule": RULE_OK})
    source_faults: list[tuple[str, ActivePointer, BundleDoc | None, str]] = [
        ("active pointer to a revision not stored", ActivePointer("default", 77, "0" * 64), None, "not in the source"),
        ("pointer checksum differs from the document's", ActivePointer("default", 90, "f" * 64), BundleDoc("default", 90, checksum_files(bumped), bumped), "does not match"),
        ("files tampered after the checksum", ActivePointer("default", 90, good.checksum), BundleDoc("default", 90, good.checksum, tampered), "checksum mismatch"),
        ("manifest rev differs from the pointer", ActivePointer("default", 91, checksum_files(bumped)), BundleDoc("default", 91, checksum_files(bumped), bumped), "the manifest says"),
        ("a file path escaping the bundle", ActivePointer("default", 90, checksum_files(escaping)), BundleDoc("default", 90, checksum_files(escaping), escaping), "escapes"),
    ]  # fmt: skip
    for name, pointer, doc, fragment in source_faults:
        before = len(events.items)
        reloader.source = FaultySource(pointer, doc)
        result = reloader.check_once("cfg:events")
        _expect(c, name, result, registry, events.items[before:], fragment, reasons)
    reloader.source = FaultySource(good_pointer(good), good, fail=OSError("store unreachable"))
    result = reloader.check_once("poll")
    c.checked += 1
    if result.status != "unavailable" or registry.current.rev != 1:
        c.fail(f"store down: {result.status}, serving rev {registry.current.rev}")
    reasons["store unreachable"] = f"{result.status}: {'; '.join(result.reasons)}"
    # and the next good revision is taken as usual
    reloader.source = StoreSource(store)
    publish(store, None, None, write_bundle(tmp_path, 99), reason="good rev 99")
    result = reloader.check_once("cfg:events")
    c.checked += 1
    if (result.status, registry.current.rev) != ("applied", 99):
        c.fail(f"good rev 99 after the bad ones: {result.status} {result.reasons}")
    store.close()
    report = Report("malformed bundles", time.monotonic() - started, checks=[c])
    report.summary = f"{len(reasons)} malformations, each rejected; a good rev applied after"
    report.notes.extend(f"{k}: {v[:150]}" for k, v in reasons.items())
    REPORTS.append(report)
    assert c.ok, c.problems


def good_pointer(doc: BundleDoc) -> ActivePointer:
    return ActivePointer(doc.bundle_id, doc.rev, doc.checksum)


def _expect(
    c: Check,
    name: str,
    result: Any,
    registry: Any,
    events: list[tuple[str, dict[str, Any]]],
    fragment: str,
    reasons: dict[str, str],
) -> None:
    c.checked += 1
    text = "; ".join(result.reasons)
    reasons[name] = text
    if result.status != "rejected":
        c.fail(f"{name}: {result.status}, expected rejected ({text[:200]})")
    elif fragment not in text:
        c.fail(f"{name}: the reason does not name {fragment!r}: {text[:300]}")
    if registry.current.rev != 1:
        c.fail(f"{name}: serving rev {registry.current.rev}, expected rev 1 to keep serving")
    rejected = [d for k, d in events if k == "CONFIG_REJECTED"]
    if not rejected or not rejected[-1].get("errors"):
        c.fail(f"{name}: no CONFIG_REJECTED event with its errors")
    outcome = registry.current.ruleset.evaluate(
        registry.current.ruleset.schema.validate({**EXAMPLE, "symbol": "BTCUSDT"})[0]
    )
    if outcome.fired is None:
        c.fail(f"{name}: the serving revision no longer evaluates")
