"""Property: whatever a bundle carries (file names, rule ids, names, strings, params), building
it gives a compiled bundle or DSL diagnostics and nothing else; a compiled bundle's generated
module passes the allowlist; and no audit event beyond the loader's own fires during the build
(none from generated code), and none at all while it is evaluated."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dsl import build_bundle, compiler, guard
from tests.conftest import BASE_FEATURES, SNAPSHOT
from tests.security.audit import BUILD_EVENTS, recording

CHARS = st.characters(blacklist_categories=("Cs",))
FILE_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")
IDENT = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)
NAMES = st.one_of(IDENT, IDENT, IDENT, IDENT, st.text(CHARS, min_size=1, max_size=10))
_GOOD_ID = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,4}(-[A-Za-z0-9_]{1,4}){0,2}", fullmatch=True)
RULE_IDS = st.one_of(_GOOD_ID, _GOOD_ID, _GOOD_ID, st.text(CHARS, min_size=1, max_size=12))
_GOOD_FILE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
FILE_NAMES = st.one_of(
    _GOOD_FILE,
    _GOOD_FILE,
    _GOOD_FILE,
    st.text(FILE_CHARS, min_size=1, max_size=40).filter(lambda s: s not in (".", "..")),
).map(lambda s: s[:60] + ".rule")
SCALARS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(CHARS, max_size=20),
    st.text(CHARS, max_size=20),
)
PARAM_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4))


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


def dsl_string(s: str) -> str:
    return (
        '"'
        + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        + '"'
    )


@st.composite
def bundles(draw: st.DrawFn) -> tuple[dict[str, str], str]:
    features = draw(st.lists(NAMES, max_size=2, unique=True))
    params = draw(st.dictionaries(NAMES, PARAM_VALUES, max_size=3))
    lets = draw(st.lists(NAMES, max_size=2, unique=True))
    manifest = 'bundle_id = "prop"\nrev = 1\n[features]\n' + BASE_FEATURES
    manifest += "".join(f'{json.dumps(f, ensure_ascii=False)} = "number"\n' for f in features)
    if params:
        manifest += "[params]\n" + "".join(
            f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n" for k, v in params.items()
        )
    files: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 2))):
        lines = [f"let {name} = mid > {draw(st.integers(0, 9))}" for name in lets]
        for _ in range(draw(st.integers(1, 3))):
            rid = draw(RULE_IDS)
            title = draw(st.one_of(st.none(), st.text(CHARS, max_size=15)))
            reads = draw(st.sampled_from([*features, *params, *lets, "mid", "symbol"]))
            cond = draw(
                st.sampled_from(
                    [
                        f"symbol == {dsl_string(draw(st.text(CHARS, max_size=15)))}",
                        f'symbol in [{dsl_string(draw(st.text(CHARS, max_size=8)))}, "x"]',
                        f"{reads} > 0",
                        f"symbol in {reads}",
                        f"{reads}",
                        f"has({reads})",
                    ]
                )
            )
            action = draw(
                st.sampled_from(["skip_entry", f"size_mult *= {reads}", "tp_mult *= 1.1"])
            )
            head = f"rule {rid}" + (f" {dsl_string(title)}" if title is not None else "")
            lines.append(f"{head} when {cond} then {action}")
        files[draw(FILE_NAMES)] = "\n".join(lines) + "\n"
    return files, manifest


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(bundle=bundles())
def test_any_bundle_is_built_or_diagnosed_and_its_code_stays_inside(
    tmp_path_factory: Any, bundle: tuple[dict[str, str], str]
) -> None:
    files, manifest = bundle
    root = Path(str(tmp_path_factory.mktemp("prop")))
    (root / "bundle.toml").write_text(manifest, encoding="utf-8")
    for name, text in files.items():
        try:
            (root / name).write_text(text, encoding="utf-8")
        except (OSError, ValueError):  # a name this file system cannot hold
            return
    with recording() as build_events:
        result = build_bundle(root)  # never raises: a bundle or diagnostics
    assert [e for e in build_events if e.from_generated] == []
    assert {e.name for e in build_events} <= BUILD_EVENTS, build_events
    event("built" if result.ruleset is not None else "diagnosed")
    if result.ruleset is None:
        assert any(d.is_error for d in result.diagnostics)
        assert all(d.code[0] in "EW" for d in result.diagnostics)
        assert [d.message for d in result.diagnostics if not d.message.isprintable()] == []
        return
    rs = result.ruleset
    helpers = compiler._HELPER_NAMES
    assert guard.verify(ast.parse(rs.source), "_evaluate", ("f",), helpers) == []
    gen = compiler._Gen(rs.checked.lets, traced=True)
    traced, _ = compiler._function("_evaluate_traced", rs.rules, gen, "f, _w, _s")
    assert guard.verify(ast.parse(traced), "_evaluate_traced", ("f", "_w", "_s"), helpers) == []
    rs.evaluate(SNAPSHOT, trace=True)  # compiles the traced twin outside the recording
    with recording() as eval_events:
        rs.evaluate(SNAPSHOT)
        rs.evaluate(SNAPSHOT, trace=True)
        rs.run(SNAPSHOT)
    assert eval_events == []


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    strings=st.lists(
        st.text(CHARS, max_size=30).filter(
            lambda s: all(c.isprintable() or c in "\n\t" for c in s)
        ),
        min_size=1,
        max_size=4,
    ),
    param=st.text(CHARS, max_size=30),
)
def test_any_string_is_a_literal_that_compares_equal_to_itself(
    tmp_path_factory: Any, strings: list[str], param: str
) -> None:
    root = Path(str(tmp_path_factory.mktemp("str")))
    manifest = (
        'bundle_id = "prop"\nrev = 1\n[features]\n'
        + BASE_FEATURES
        + f"[params]\npv = {json.dumps(param, ensure_ascii=False)}\n"
    )
    (root / "bundle.toml").write_text(manifest, encoding="utf-8")
    rules = [
        f"rule S-{i} {dsl_string(s)} when symbol == {dsl_string(s)} then skip_entry"
        for i, s in enumerate(strings)
    ]
    rules.append(
        f"rule L-1 when symbol in [{', '.join(dsl_string(s) for s in strings)}] then tp_mult *= 1.1"
    )
    rules.append("rule P-1 when symbol == pv then sl_mult *= 0.9")
    (root / "main.rule").write_text("\n".join(rules) + "\n", encoding="utf-8")
    with recording() as build_events:
        result = build_bundle(root)
    if "\x7f" in param:  # TOML wants it escaped (JSON does not): E302
        assert result.ruleset is None
        return
    assert result.ruleset is not None, [d.render(result.texts) for d in result.diagnostics]
    assert [e for e in build_events if e.from_generated] == [], [str(e) for e in build_events]
    rs = result.ruleset
    assert guard.verify(ast.parse(rs.source), "_evaluate", ("f",), compiler._HELPER_NAMES) == []
    with recording() as eval_events:
        for s in [*strings, param]:
            out = rs.evaluate({**SNAPSHOT, "symbol": s})
            want = {f"S-{i}" for i, x in enumerate(strings) if x == s}
            assert want <= set(out.fired)
            assert ("L-1" in out.fired) == (s in strings)
            assert ("P-1" in out.fired) == (s == param)
    assert eval_events == []
