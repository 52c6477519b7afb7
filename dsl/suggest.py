"""Did-you-mean hints. A missing hint beats a wrong one, so the cutoff is strict."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """Return ``did you mean 'x'?`` for the closest known name at ratio >= 0.8, else None."""
    candidates = sorted(set(known))
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.8)
    if not match:
        lowered = {c.lower(): c for c in candidates}
        if name.lower() in lowered:
            match = [lowered[name.lower()]]
    if not match and len(name) >= 3:  # "trending" for "trend": one candidate it extends
        low = name.lower()
        prefixed = [c for c in candidates if len(c) >= 3 and low.startswith(c.lower())]
        if len(prefixed) == 1:
            match = prefixed
    return f"did you mean '{match[0]}'?" if match else None


def keyword_hint(found: str, expected: str) -> str | None:
    """A did-you-mean for a word where the grammar expected one of the quoted words in
    ``expected`` (`wen` where 'when' was expected)."""
    words = re.findall(r"'([A-Za-z_]+)'", expected)
    return did_you_mean(found.strip("'\""), words) if words else None
