"""`s3 replay TAPE --bundle A --snapshot F --check | --update`: compare the replay with a stored
snapshot decision by decision (event, field, before -> after) instead of a raw JSON diff."""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The fields a reader looks at first, in this order; the rest follow alphabetically.
FIRST = (
    "decision",
    "reason",
    "reason_detail",
    "rules_fired",
    "size_mult",
    "intent.side",
    "intent.qty",
    "intent.entry_px",
    "intent.tp_px",
    "intent.sl_px",
)


REV_FIELDS = ("config_rev", "intent.intent_id")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves by dotted path; a list of scalars is one leaf (a list of rule ids reads as one)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        out = {}
        for i, v in enumerate(value):
            out |= flatten(v, f"{prefix}[{i}]")
        return out
    return {prefix: value}


def _order(path: str) -> tuple[int, str]:
    return (FIRST.index(path), "") if path in FIRST else (len(FIRST), path)


@dataclass
class SnapshotDiff:
    meta: list[tuple[str, Any, Any]] = field(default_factory=list)
    changed: dict[str, list[tuple[str, Any, Any]]] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def decisions_changed(self) -> bool:
        return bool(self.changed or self.added or self.removed)


def compare(old: dict[str, Any], new: dict[str, Any]) -> SnapshotDiff:
    d = SnapshotDiff()
    old_meta = flatten({k: v for k, v in old.items() if k != "decisions"})
    new_meta = flatten({k: v for k, v in new.items() if k != "decisions"})
    for path in sorted(old_meta.keys() | new_meta.keys()):
        if old_meta.get(path) != new_meta.get(path):
            d.meta.append((path, old_meta.get(path), new_meta.get(path)))
    # a new revision renumbers every decision (config_rev, and the intent ids hashed with it):
    # said once, not per event
    rev_moved = any(p == "bundle.rev" for p, _, _ in d.meta)
    skip = REV_FIELDS if rev_moved else ()
    if rev_moved:
        d.notes.append("config_rev and intent ids follow the new bundle rev: not listed per event")
    before, after = old.get("decisions", {}), new.get("decisions", {})
    d.added = sorted(after.keys() - before.keys())
    d.removed = sorted(before.keys() - after.keys())
    for key in sorted(before.keys() & after.keys()):
        a, b = flatten(before[key]), flatten(after[key])
        fields = [
            (p, a.get(p), b.get(p))
            for p in sorted(a.keys() | b.keys(), key=_order)
            if a.get(p) != b.get(p) and p not in skip
        ]
        if fields:
            d.changed[key] = fields
    return d


def _v(x: Any) -> str:
    return "(absent)" if x is None else json.dumps(x, ensure_ascii=False)


def render(d: SnapshotDiff, *, path: str, limit: int = 50) -> str:
    if not d.decisions_changed and not d.meta:
        return f"snapshot {path}: no change"
    lines = []
    if d.meta:
        lines.append("run:")
        lines += [f"  {p}: {_v(a)} -> {_v(b)}" for p, a, b in d.meta]
        lines += [f"  ({n})" for n in d.notes]
    if not d.decisions_changed:
        lines.append(f"snapshot {path}: every decision identical")
        return "\n".join(lines)
    counts: collections.Counter[str] = collections.Counter(
        p for fields in d.changed.values() for p, _, _ in fields
    )
    lines.append(
        f"snapshot {path}: {len(d.changed)} events changed, {len(d.added)} added, "
        f"{len(d.removed)} removed"
    )
    lines.append(
        "fields changed (events): " + ", ".join(f"{p} {n}" for p, n in counts.most_common(12))
    )
    for shown, (key, fields) in enumerate(d.changed.items()):
        if shown >= limit:
            lines.append(f"... and {len(d.changed) - shown} more events (--max-list)")
            break
        lines.append(f"{key}:")
        lines += [f"  {p}: {_v(a)} -> {_v(b)}" for p, a, b in fields]
    lines += [f"added {k}" for k in d.added[:limit]]
    lines += [f"removed {k}" for k in d.removed[:limit]]
    return "\n".join(lines)


def load(path: str) -> dict[str, Any] | None:
    p = Path(path)
    if not p.is_file():
        return None
    value = json.loads(p.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else None


def parse(text: str) -> dict[str, Any]:
    value = json.loads(text)
    assert isinstance(value, dict)
    return value
