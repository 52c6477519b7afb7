"""A bundle cannot freeze a reload: the parser's error path and the clamp lint are linear.

The parser looked for a foreign word before each error with ``([A-Za-z_]+)\\s*$`` over all the
text before it (quadratic in a run of letters: 24 s on a 40 KB file, and it froze `/decide` for
34 s during a reload) and parsed the whole file again after each error (50 errors: 50 parses).
The clamp lint compared every rule with every other (20,000 rules: 191 s, 784 MB). Work is
counted here, not timed, except for one generous CPU bound on the text that was quadratic.
"""

from __future__ import annotations

import random
import re
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from lark.exceptions import UnexpectedInput

from dsl import DslError, lints, nodes, parse_text, parser
from dsl.schema import OUTPUTS, Bounds, Clamp


def test_the_word_before_an_error_is_found_without_a_regex_over_the_prefix() -> None:
    rng = random.Random(7)
    alphabet = "ab_ 1\t\n(Z"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        offset = rng.randint(0, len(text))
        m = re.search(r"([A-Za-z_]+)\s*$", text[:offset])  # the old way, as the oracle
        start, word = parser._word_before(text, offset)
        assert (word, start) == ((m.group(1), m.start(1)) if m else ("", start))


def test_a_long_name_before_an_error_is_cheap() -> None:
    text = "rule R-1 when " + "a" * 40_000 + "1 > 0 then skip_entry )\n"  # 40 KB
    parse_text("rule R-0 when mid > 0 then skip_entry")  # build the parser first
    started = time.process_time()
    with pytest.raises(DslError) as info:
        parse_text(text)
    assert time.process_time() - started < 3.0  # was 24 s and more; now milliseconds
    assert [d.code for d in info.value.diagnostics] == ["E101"]


class _Counting:
    """Wraps the Lark parser and counts the characters it reads that are not blank (the parser
    lexes as it goes, so a parse that fails has read the text up to the error)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.chars = 0
        self.calls = 0

    def parse(self, text: str) -> Any:
        self.calls += 1
        read = text
        try:
            return self.real.parse(text)
        except UnexpectedInput as exc:
            read = text[: (exc.pos_in_stream or 0) + 1]
            raise
        finally:
            self.chars += len(read) - read.count(" ") - read.count("\n")


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Counting]:
    wrapper = _Counting(parser._lark())
    monkeypatch.setattr(parser, "_lark", lambda: wrapper)
    yield wrapper


@pytest.mark.parametrize("where", ["start", "end", "spread"])
def test_each_part_of_a_file_is_parsed_about_once_however_many_errors(
    counting: _Counting, where: str
) -> None:
    good = [
        f"rule R-{i} when mid > {i} and spread_bps < 2 then size_mult *= 1.1\n" for i in range(400)
    ]
    bad = [f"rule B-{i} when mid > > 1 then skip_entry\n" for i in range(40)]
    if where == "start":
        lines = bad + good
    elif where == "end":
        lines = good + bad
    else:
        lines = [x for pair in zip(good[::10], bad, strict=False) for x in pair] + good
    text = "".join(lines)
    with pytest.raises(DslError) as info:
        parse_text(text)
    assert sorted(d.code for d in info.value.diagnostics) == ["E101"] * 40
    size = len(text) - text.count(" ") - text.count("\n")
    assert counting.chars <= 2.2 * size, (counting.calls, counting.chars / size)


def test_error_recovery_reports_what_it_reported_before(counting: _Counting) -> None:
    # The same diagnostics as parsing everything again after each error (the old way).
    text = (
        "rule R-1 when mid >\n"  # incomplete: the next item's 'rule' is the error
        "rule R-2 when mid > 1 then skip_entry\n"
        "let a = = 2\n"
        "rule R-3 when a then size_mult = 2\n"
        "rule R-4 when (mid > 1 then skip_entry\n"
        "import os\n"
        "rule R-5 when mid > 1 then skip_entry\n"
    )
    with pytest.raises(DslError) as info:
        parse_text(text)
    got = sorted((d.code, d.span.line if d.span else 0) for d in info.value.diagnostics)
    assert got == _old_way(text)


def _old_way(text: str) -> list[tuple[str, int]]:
    from dsl.source import Source

    source = Source("<string>", text)
    out = []
    for _ in range(parser.MAX_SYNTAX_ERRORS):
        try:
            parser._lark().parse(text)
            break
        except (
            parser.UnexpectedCharacters,
            parser.UnexpectedToken,
            parser.UnexpectedEOF,
        ) as exc:
            diag, offset = parser._syntax_diagnostic(source, text, exc)
            out.append((diag.code, diag.span.line if diag.span else 0))
            where = parser._blank_item_at(text, offset)
            if where is None:
                break
            start, end = where
            text = text[:start] + parser._blank(text[start:end]) + text[end:]
    return sorted(out)


def _rules(factors: list[list[tuple[str, float]]]) -> list[Any]:
    return [
        types.SimpleNamespace(
            rule_id=f"R-{i}",
            scales=tuple((out, nodes.Number(x, repr(x))) for out, x in fs),
            rule=types.SimpleNamespace(id_span=None),
        )
        for i, fs in enumerate(factors)
    ]


def _naive_clamp_hits(rules: list[Any], clamp: Clamp) -> list[str]:
    """The all-pairs lint as it was: the oracle for the linear one."""
    out = []
    for o in OUTPUTS:
        b = clamp.bounds(o)
        consts = [(r, e.value) for r in rules for t, e in r.scales if t == o]
        for r, c in consts:
            low = high = c
            for rr, x in consts:
                if rr is not r:
                    low *= min(x, 1.0)
                    high *= max(x, 1.0)
            if low > b.max:
                out.append(f"{o} {r.rule_id} {c} high")
            elif high < b.min:
                out.append(f"{o} {r.rule_id} {c} low")
    return out


CLAMP = Clamp(Bounds(0.25, 2.0), Bounds(0.5, 2.0), Bounds(0.5, 1.5))


def test_the_linear_clamp_lint_agrees_with_all_pairs() -> None:
    rng = random.Random(11)
    values = [0.1, 0.25, 0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 4.0, 7.0]
    for _ in range(2000):
        factors = [
            [(rng.choice(OUTPUTS), rng.choice(values)) for _ in range(rng.randint(0, 3))]
            for _ in range(rng.randint(1, 7))
        ]
        rules = _rules(factors)
        got = [
            d.message.split(" always")[0] + (" high" if "above" in d.message else " low")
            for d in lints._clamp_hits(rules, CLAMP)
        ]
        want = [
            f"{o} *= {float(c):g} in rule {rid}" + (" high" if h == "high" else " low")
            for o, rid, c, h in (x.split() for x in _naive_clamp_hits(rules, CLAMP))
        ]
        assert got == want


def test_the_clamp_lint_on_20000_rules_reads_each_factor_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(3)
    rules = _rules([[("size_mult", rng.choice([0.9, 1.1]))] for _ in range(20_000)])
    calls = 0
    real_min = min

    def counting_min(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_min(*args)

    monkeypatch.setattr(lints, "min", counting_min, raising=False)
    list(lints._clamp_hits(rules, CLAMP))
    assert calls <= 3 * 20_000  # all pairs: 400 million
