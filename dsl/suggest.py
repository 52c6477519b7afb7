"""Did-you-mean hints. A missing hint beats a wrong one, so the cutoff is strict."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """Return ``did you mean 'x'?`` for the closest known name at ratio >= 0.8, else None."""
    candidates = sorted(set(known))
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.8)
    if not match:
        lowered = {c.lower(): c for c in candidates}
        if name.lower() in lowered:
            match = [lowered[name.lower()]]
    return f"did you mean '{match[0]}'?" if match else None
