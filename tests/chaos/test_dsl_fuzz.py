"""Fuzz of the DSL front end: thousands of generated and mutated rule sources through parse →
check → compile → one evaluation. Only the DSL's own diagnostics (`DslError`) may come out,
never another exception, and every source is done within a bounded time.

Mutations start from the real rules of `rulesets/default` (cut, duplicate, swap, insert tokens,
truncate, flip bytes); generation uses the well-typed sources of `tests.dsl.strategies` and
token soup. The report gives the sources tried, how many were rejected with diagnostics, the
diagnostic codes seen and the slowest source.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl import DslError, check, compile_ruleset, parse_manifest, parse_text
from s3.config.engine import ENGINE_SECTIONS
from tests.chaos.conftest import SOAK
from tests.chaos.harness import REPORTS, Report
from tests.chaos.invariants import Check
from tests.dsl.strategies import SCHEMA_TOML, rule_sources

ROOT = Path(__file__).resolve().parents[2] / "rulesets" / "default"
RULES = {p.name: p.read_text() for p in sorted(ROOT.glob("*.rule"))}
MANIFEST, _ = parse_manifest(
    "bundle.toml", (ROOT / "bundle.toml").read_text(), known_sections=ENGINE_SECTIONS
)
GENERATED_MANIFEST, _ = parse_manifest("bundle.toml", SCHEMA_TOML)
GENERATED_SNAPSHOT = {"a": 1.5, "b": -2.0, "c": 3, "s": "x", "flag": True}
SNAPSHOT = {
    **{
        k: v
        for k, v in json.loads((ROOT / "examples" / "btc_buy_real.json").read_text()).items()
        if k != "ts"
    },
}
EXAMPLES = 20_000 if SOAK else 1_000
BOUND_S = 2.0
"""No source may take more CPU time than this through the whole front end."""
TOKENS = [
    "rule", "let", "when", "then", "priority", "and", "or", "not", "in", "has(", "between(",
    "log(", "sqrt(", "min(", "clamp(", "skip_entry", "size_mult *=", "tp_mult *=", "(", ")",
    "[", "]", ",", "==", "!=", "<=", ">", "*", "/", "-", "+", "1", "0", "1e308", "1e999",
    "-0.0", '"', '"BUY"', "R-001", "R-001 \"dup\"", "\n", "\n\n", "  ", "#", "\\", "\t", "\x00",
    "é", "𝛼", "__import__", "lambda", "mid", "spread_bps", "side", "regime", "majors", "nope",
    "((((((((((", "))))))))))", "not not not", "and and", "1 < 2 < 3 < 4",
]  # fmt: skip


class _Stats:
    def __init__(self, name: str) -> None:
        self.name = name
        self.tried = 0
        self.rejected = 0
        self.codes: Counter[str] = Counter()
        self.slowest = 0.0
        self.slowest_source = ""
        self.started: float | None = None
        self.ended = 0.0
        self.check = Check("bad input", f"DSL fuzz ({name}): only DslError, each under {BOUND_S} s")

    def run(self, source: str, generated: bool = False) -> None:
        if self.started is None:
            self.started = time.monotonic()
        started = time.thread_time()  # CPU time: other processes on the machine do not count
        try:
            front_end(source, generated)
        except DslError as exc:
            self.rejected += 1
            self.codes.update(d.code for d in exc.diagnostics)
        except Exception as exc:
            self.check.fail(f"{type(exc).__name__}: {exc} on {source[:200]!r}")
            raise
        finally:
            took = time.thread_time() - started
            self.tried += 1
            self.check.checked += 1
            if took > self.slowest:
                self.slowest, self.slowest_source = took, source
            self.ended = time.monotonic()
        if took > BOUND_S:  # once more: a garbage collection may have landed in the first run
            again = time.thread_time()
            with contextlib.suppress(DslError):
                front_end(source, generated)
            took = min(took, time.thread_time() - again)
        if took > BOUND_S:
            self.check.fail(f"{took:.2f} s on {source[:200]!r}")
            pytest.fail(f"front end took {took:.2f} s > {BOUND_S} s")

    def report(self) -> None:
        top = ", ".join(f"{c} {n}" for c, n in self.codes.most_common(8))
        took = self.ended - (self.started or self.ended)
        r = Report(f"DSL fuzz: {self.name}", took, checks=[self.check])
        r.summary = (
            f"sources {self.tried}, rejected with diagnostics {self.rejected}, compiled "
            f"{self.tried - self.rejected}; slowest {self.slowest * 1000:.0f} ms; codes: {top}"
        )
        REPORTS.append(r)


def front_end(source: str, generated: bool = False) -> Any:
    """parse → check (with the default bundle's schema, params and clamps, or the generator's)
    → compile → evaluate once on a valid snapshot (faults are values there, never exceptions)."""
    manifest = GENERATED_MANIFEST if generated else MANIFEST
    assert manifest is not None
    module = parse_text(source, "fuzz.rule")
    checked = check([module], schema=manifest.schema, params=manifest.params, clamp=manifest.clamp)
    ruleset = compile_ruleset(checked, revision=1, bundle_id="fuzz")
    snapshot, _ = ruleset.schema.validate(GENERATED_SNAPSHOT if generated else SNAPSHOT)
    return ruleset.evaluate(snapshot, trace=True)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(sorted(RULES.values())))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["cut", "dup", "insert", "swap", "truncate", "flip"]))
        n = len(text)
        i = draw(st.integers(0, max(0, n)))
        j = min(n, i + draw(st.integers(0, 80)))
        if op == "cut":
            text = text[:i] + text[j:]
        elif op == "dup":
            text = text[:j] + text[i:j] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif op == "swap":
            lines = text.split("\n")
            a = draw(st.integers(0, len(lines) - 1))
            b = draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
        elif op == "truncate":
            text = text[:i]
        elif i < n:
            text = text[:i] + chr((ord(text[i]) + draw(st.integers(1, 96))) % 0x250) + text[i + 1 :]
    return text


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def stats() -> Any:
    made: dict[str, _Stats] = {}

    def get(name: str) -> _Stats:
        return made.setdefault(name, _Stats(name))

    yield get
    for s in made.values():
        s.report()


@FUZZ
@given(source=mutated())
def test_mutated_real_rules(source: str, stats: Any) -> None:
    stats("mutated default rules").run(source)


@settings(FUZZ, max_examples=EXAMPLES // 2)
@given(
    source=rule_sources(),
    cuts=st.lists(st.tuples(st.integers(0, 5000), st.sampled_from(TOKENS)), max_size=3),
)
def test_generated_sources(source: str, cuts: list[tuple[int, str]], stats: Any) -> None:
    for pos, token in cuts:
        pos %= len(source) + 1
        source = source[:pos] + token + source[pos:]
    stats("generated (well-typed), then cut").run(source, generated=True)


@settings(FUZZ, max_examples=EXAMPLES // 2)
@given(source=st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_token_soup(source: str, stats: Any) -> None:
    stats("token soup").run(source)
