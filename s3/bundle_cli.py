"""`s3 bundle publish` runs the bundle's cases first (and records a forced publish);
`s3 bundle list` and `show` print why, when and by whom each revision was published."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path
from typing import Any

from s3.adapters import store_docs

PUBLISHED = "BUNDLE_PUBLISHED"


def run_cases(snapshot: Any, bundle_dir: str) -> tuple[int, list[str]]:
    """The bundle's own cases (DIR/cases/*.toml): how many ran, and one line per failure or
    case file error."""
    from dsl.cases import case_files, load_cases, run_case

    paths = case_files(Path(bundle_dir))
    cases, diags = load_cases(paths)
    problems = [d.render() for d in diags]
    for c in cases:
        r = run_case(snapshot.ruleset, c)
        if not r.passed:
            problems.append(f"FAIL {c.where} {c.name}: " + "; ".join(r.failures))
    return len(cases), problems


def who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return "s3"


def record(store: Any, bundle_id: str, rev: int, detail: dict[str, Any]) -> None:
    """A `BUNDLE_PUBLISHED` strategy event: reason, forced, by, cases (what `list` shows)."""
    now = int(time.time() * 1000)
    store.put_event(
        {
            "event_id": store_docs.event_id(PUBLISHED, bundle_id, rev, time.time_ns()),
            "kind": PUBLISHED,
            "symbol": "",
            "ts": now,
            "detail": {"bundle_id": bundle_id, "rev": rev, **detail},
        }
    )


def publications(store: Any) -> dict[tuple[str, int], dict[str, Any]]:
    """The last publish record of each (bundle_id, rev)."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        events = store.events_by_kind(PUBLISHED, limit=10_000)
    except Exception:  # a store without the event: list what it has
        return out
    for e in sorted(events, key=lambda e: e.ts):
        d = e.detail
        out[(str(d.get("bundle_id")), int(d.get("rev", -1)))] = d
    return out


def when(ms: int | None) -> str:
    if not ms:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def list_lines(store: Any, bundle_id: str | None, where: str) -> list[str]:
    active = store.get_active()
    bundles = store.list_bundles(bundle_id)
    if not bundles:
        scope = f" with bundle_id {bundle_id}" if bundle_id else ""
        return [
            f"no bundles{scope} in the store ({where}); publish one with: s3 bundle publish DIR "
            "(a server bootstraps S3_BUNDLE_DIR into an empty store when it starts)"
        ]
    pubs = publications(store)
    lines = []
    for b in bundles:
        is_active = bool(active and (active.bundle_id, active.rev) == (b.bundle_id, b.rev))
        pub = pubs.get((b.bundle_id, b.rev), {})
        reason = pub.get("reason") or (active.reason if is_active and active else "")
        lines.append(
            f"{'*' if is_active else ' '} {b.bundle_id} rev {b.rev}  {b.checksum[:12]}  "
            f"{len(b.files)} files  published {when(b.published_at)} by {b.published_by or '?'}"
            f"  reason: {reason or '-'}"
        )
        if b.description:
            lines.append(f"    {b.description}")
    return lines


def show_doc(store: Any, b: Any) -> str:
    active = store.get_active()
    is_active = bool(active and active.rev == b.rev and active.bundle_id == b.bundle_id)
    pub = publications(store).get((b.bundle_id, b.rev), {})
    return json.dumps(
        {
            "bundle_id": b.bundle_id,
            "rev": b.rev,
            "checksum": b.checksum,
            "description": b.description,
            "published_at": when(b.published_at),
            "published_by": b.published_by,
            "reason": pub.get("reason") or (active.reason if is_active and active else None),
            "forced": bool(pub.get("forced")),
            "cases": pub.get("cases"),
            "files": sorted(b.files),
            "active": is_active,
        },
        indent=2,
    )
