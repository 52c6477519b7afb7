"""Feature keys nobody reads: a typo (`regmie`) that would otherwise pass silently.

`s3 rules explain` and `s3 replay` warn about them with a did-you-mean (an error under
`--strict`); `/decide` and stream events accept them (producers send more than a bundle reads)
and count them by name in `s3_unknown_feature_keys_total` (s3/engine.py).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import Any

from dsl.suggest import did_you_mean
from s3.engine import ENGINE_FIELDS


def warnings_for(features: Iterable[Mapping[str, Any]], known: Iterable[str]) -> list[str]:
    """One line per unknown key over ``features`` (how many snapshots carry it, and the
    feature meant when one is close)."""
    declared = set(known)
    allowed = declared | ENGINE_FIELDS
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for f in features:
        total += 1
        counts.update(k for k in f if k not in allowed)
    out = []
    for key, n in sorted(counts.items()):
        hint = did_you_mean(key, declared)
        where = f" in {n} of {total} events" if total > 1 else ""
        out.append(
            f"unknown feature '{key}'{where} (not in the bundle's [features]; ignored)"
            + (f"; {hint}" if hint else "")
        )
    return out
