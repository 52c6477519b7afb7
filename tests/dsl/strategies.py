"""Hypothesis strategies: well-typed rule sources over a fixed schema, and snapshots for it."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

SCHEMA_TOML = """\
bundle_id = "prop"
rev = 1
[clamp]
size_mult = { min = 0.25, max = 2.0 }
tp_mult = { min = 0.5, max = 2.0 }
sl_mult = { min = 0.5, max = 1.5 }
[features]
a = { type = "number", history = 2 }
b = { type = "number", history = 3 }
c = { type = "int", history = 1 }
u = { type = "number", unit = "fraction", history = 1 }
ts = { type = "int", unit = "ms" }
o = { type = "number", optional = true }
s = { type = "enum", values = ["x", "y", "z"] }
flag = "bool"
[params]
k = 1.5
names = ["x", "y"]
tbl = { by = "s", values = { x = 1.5, y = -2, z = 0 } }
"""

NUMBER_LITERALS = st.sampled_from(
    ["0", "1", "2", "0.5", "1.5", "3", "1e3", "2.5e-1", "1_000", "100", "k"]
)
POSITIVE_LITERALS = st.sampled_from(["0.5", "0.9", "1.1", "1.2", "2", "3", "k"])
NUM_LEAVES = st.one_of(
    st.sampled_from(["a", "b", "c"]),
    NUMBER_LITERALS,
    # the second edition: history, tables, conversions, scores
    st.sampled_from(
        [
            "prev(a)",
            "prev(b, 2)",
            "prev(a + b)",
            "k * 2",
            "to_fraction(u)",
            "to_fraction(to_percent(u))",
            "count_true(a > b, c > 1)",
        ]
    ),
)


def _num(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda x: f"-{x}"),
        st.tuples(st.sampled_from(["abs", "log", "sqrt"]), inner).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(inner, min_size=2, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"
        ),
        st.tuples(inner, inner, inner).map(lambda t: f"clamp({t[0]}, {t[1]}, {t[2]})"),
    )


NUM = st.recursive(NUM_LEAVES, _num, max_leaves=6)
COMPARE_OPS = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])


def _bool_leaves() -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(NUM, COMPARE_OPS, NUM).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(NUM, st.sampled_from(["<", "<="]), NUM, st.sampled_from(["<", "<="]), NUM).map(
            lambda t: " ".join(t)
        ),
        st.sampled_from(
            ['s == "x"', 's != "z"', "s in names", 's not in ["y"]', "flag", "true", "false"]
        ),
        st.tuples(NUM, NUM, NUM).map(lambda t: f"between({t[0]}, {t[1]}, {t[2]})"),
        st.tuples(st.sampled_from(["and", "or"]), NUM).map(
            lambda t: f"(has(o) and o > {t[1]})" if t[0] == "and" else f"(not has(o) or o < {t[1]})"
        ),
        st.sampled_from(["c in [1, 2, 3]", "a in [0, 1.5]", "has(o)"]),
        st.tuples(NUM, NUM).map(lambda t: f"crossed_above({t[0]}, {t[1]})"),
        st.tuples(NUM, NUM).map(lambda t: f"crossed_below({t[0]}, {t[1]})"),
        st.tuples(NUM, NUM, NUM).map(lambda t: f"between_wrap({t[0]}, {t[1]}, {t[2]})"),
        st.tuples(st.integers(0, 23), st.integers(0, 23)).map(
            lambda t: f"between_wrap(hour_utc(ts), {t[0]}, {t[1]})"
        ),
        st.sampled_from(["weekday_utc(ts) >= 5", "minute_of_day_utc(ts) < 600"]),
        st.tuples(NUM, COMPARE_OPS).map(lambda t: f"tbl[s] {t[1]} {t[0]}"),
        st.sampled_from(['count_true(flag, has(o), s == "x") >= 2']),
    )


def _bool(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda x: f"not ({x})"),
    )


BOOL = st.recursive(_bool_leaves(), _bool, max_leaves=6)
FACTOR = st.one_of(
    POSITIVE_LITERALS, NUM.map(lambda x: f"({x}) * 1"), NUM.map(lambda x: f"abs({x}) + 0.5")
)


@st.composite
def rule_sources(draw: st.DrawFn, max_rules: int = 6) -> str:
    """A module of well-typed rules (and maybe lets) that the checker accepts."""
    lines = []
    n_lets = draw(st.integers(0, 2))
    for i in range(n_lets):
        lines.append(f"let l{i} = {draw(BOOL)}")
    for i in range(draw(st.integers(1, max_rules))):
        cond = draw(BOOL)
        if n_lets and draw(st.booleans()):
            cond = (
                f"{cond} {draw(st.sampled_from(['and', 'or']))} l{draw(st.integers(0, n_lets - 1))}"
            )
        prio = draw(st.sampled_from(["", " priority 5", " priority -2", " priority 5"]))
        if draw(st.integers(0, 4)) == 0:
            actions = "skip_entry"
        else:
            targets = draw(
                st.lists(
                    st.sampled_from(["size_mult", "tp_mult", "sl_mult"]), min_size=1, max_size=3
                )
            )
            actions = ", ".join(f"{t} *= {draw(FACTOR)}" for t in targets)
        lines.append(f'rule R-{i:03d} "r{i}"{prio}\n  when {cond}\n  then {actions}')
    return "\n\n".join(lines) + "\n"


SPECIAL_FLOATS = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1.5, 3.0, 1e-9, 1e300, -1e300, 2.0, 1000.0])


@st.composite
def snapshots(draw: st.DrawFn) -> dict[str, Any]:
    num = st.one_of(SPECIAL_FLOATS, st.floats(-1e6, 1e6, allow_nan=False), st.integers(-5, 5))
    snap: dict[str, Any] = {
        "a": draw(num),
        "a_prev": draw(num),
        "a_prev2": draw(num),
        "b": draw(num),
        "b_prev": draw(num),
        "b_prev2": draw(num),
        "b_prev3": draw(num),
        "u": draw(num),
        "u_prev": draw(num),
        "c_prev": draw(st.integers(-3, 1000)),
        "ts": draw(st.integers(0, 2**42)),
        "c": draw(st.integers(-3, 1000)),
        "s": draw(st.sampled_from(["x", "y", "z"])),
        "flag": draw(st.booleans()),
    }
    if draw(st.booleans()):
        snap["o"] = draw(num)
    return snap
