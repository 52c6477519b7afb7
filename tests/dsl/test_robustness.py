"""The front end on junk: only the DSL's own diagnostics come out, never another exception."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark

from dsl import DslError, build_bundle, parse_text
from dsl.parser import _lark
from tests.dsl.strategies import SCHEMA_TOML, rule_sources

TOKENS = st.sampled_from(
    [
        "rule",
        "let",
        "when",
        "then",
        "priority",
        "and",
        "or",
        "not",
        "in",
        "R-1",
        "x",
        "a",
        "(",
        ")",
        "[",
        "]",
        ",",
        "==",
        "<",
        "*=",
        "=",
        "-",
        "+",
        "*",
        "/",
        "1",
        "1.5e3",
        '"s"',
        "skip_entry",
        "size_mult",
        "has",
        "\n",
        " ",
        "#",
        ".",
        "_",
        "\\",
        '"',
        "true",
        "log(",
        "__import__",
        "lambda",
        "1e999",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    with contextlib.suppress(DslError):
        parse_text(text)


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, max_size=40).map(" ".join))
def test_token_soup(text: str) -> None:
    with contextlib.suppress(DslError):
        parse_text(text)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)
@given(from_lark(_lark(), start="start"))
def test_grammar_generated_text(text: str) -> None:
    # from_lark joins tokens without the whitespace the grammar ignores, so words run together:
    # the text is grammar-shaped junk, and only the DSL's own error may come out.
    with contextlib.suppress(DslError):
        parse_text(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=rule_sources(),
    cuts=st.lists(
        st.tuples(
            st.integers(0, 10_000), st.sampled_from(["", "(", ")", "x", '"', "and", "=", "."])
        ),
        max_size=4,
    ),
)
def test_mutated_sources_through_the_whole_front_end(
    tmp_path_factory: object, source: str, cuts: list[tuple[int, str]]
) -> None:
    for pos, insert in cuts:
        pos %= len(source) + 1
        source = source[:pos] + insert + source[pos + 1 :]
    root = Path(str(tmp_path_factory.mktemp("mut")))  # type: ignore[attr-defined]
    (root / "bundle.toml").write_text(SCHEMA_TOML)
    (root / "m.rule").write_text(source)
    started = time.perf_counter()
    result = build_bundle(root)  # never raises; errors are diagnostics
    assert time.perf_counter() - started < 5.0
    assert result.ok or any(d.is_error for d in result.diagnostics)
