"""The parser: nodes and spans, exact syntax messages, all errors at once, and the limits."""

from __future__ import annotations

import pytest

from dsl import DslError, DslSyntaxError, Source, parse, parse_text
from dsl import nodes as n
from dsl.parser import MAX_DEPTH, MAX_ITEM_NODES
from dsl.source import MAX_SOURCE_BYTES, Span


def errors_of(text: str) -> str:
    with pytest.raises(DslSyntaxError) as info:
        parse_text(text, "x.rule")
    return str(info.value)


def test_example_parses_to_nodes_with_spans() -> None:
    module = parse_text(
        'let tight = spread_bps <= 1.5\nrule R-023 "tight" priority 10\n  when tight and 0.1 <= x < 2\n'
        "  then size_mult *= 1.2, tp_mult *= 1_000\n",
        "a.rule",
    )
    let, rule = module.items
    assert isinstance(let, n.LetDef) and isinstance(rule, n.Rule)
    assert let == n.LetDef(
        "tight", n.Compare((n.Name("spread_bps"), n.Number(1.5, "1.5")), ("<=",))
    )
    assert rule.rule_id == "R-023" and rule.title == "tight" and rule.priority == 10
    assert rule.id_span == Span("a.rule", 2, 6, 2, 11)
    assert rule.when == n.BoolOp(
        "and",
        (
            n.Name("tight"),
            n.Compare((n.Number(0.1, "0.1"), n.Name("x"), n.Number(2, "2")), ("<=", "<")),
        ),
    )
    assert rule.actions == (
        n.Scale("size_mult", n.Number(1.2, "1.2")),
        n.Scale("tp_mult", n.Number(1000, "1_000")),
    )
    assert rule.when.span == Span("a.rule", 3, 8, 3, 30)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1_000", 1000), ("2.5e-3", 0.0025), ("1E3", 1000.0), ("0.000_1", 0.0001), ("7", 7)],
)
def test_number_literals(text: str, value: float) -> None:
    (rule,) = parse_text(f"rule R-1 when x > {text} then skip_entry").items
    assert isinstance(rule, n.Rule) and isinstance(rule.when, n.Compare)
    number = rule.when.operands[1]
    assert isinstance(number, n.Number)
    assert number.value == value and type(number.value) is type(value)


def test_string_escapes_and_title() -> None:
    (rule,) = parse_text('rule R-1 "say \\"hi\\"" when s == "a\\\\b\\n" then skip_entry').items
    assert isinstance(rule, n.Rule) and isinstance(rule.when, n.Compare)
    assert rule.title == 'say "hi"'
    assert rule.when.operands[1] == n.String("a\\b\n")


def test_precedence_and_associativity() -> None:
    (let,) = parse_text("let v = a - b - c * d / e + -f").items
    assert isinstance(let, n.LetDef)
    a, b, c, d, e, f = (n.Name(x) for x in "abcdef")
    cd_e = n.BinOp("/", n.BinOp("*", c, d), e)
    assert let.expr == n.BinOp("+", n.BinOp("-", n.BinOp("-", a, b), cd_e), n.Neg(f))
    (let2,) = parse_text("let w = not p or q and r").items
    assert isinstance(let2, n.LetDef)
    p, q, r = (n.Name(x) for x in "pqr")
    assert let2.expr == n.BoolOp("or", (n.Not(p), n.BoolOp("and", (q, r))))


def test_comments_are_kept_for_the_formatter() -> None:
    module = parse_text("# head\nrule R-1 when x > 1 # tail\n  then skip_entry\n")
    assert module.comments == ((1, "# head"), (2, "# tail"))


def test_exact_message_for_assignment_in_condition() -> None:
    assert errors_of("rule R-1 when spread_bps = 2 then skip_entry\n") == (
        "x.rule:1:26: E104 '=' is not a comparison in rule R-1\n"
        "    1 | rule R-1 when spread_bps = 2 then skip_entry\n"
        "      |                          ^ help: use '==' to compare values"
    )


def test_exact_message_for_missing_then() -> None:
    assert errors_of("rule R-1 when mid > 1 skip_entry\n") == (
        "x.rule:1:23: E101 expected an operator or 'then', found 'skip_entry' in rule R-1\n"
        "    1 | rule R-1 when mid > 1 skip_entry\n"
        "      |                       ^^^^^^^^^^"
    )


def test_exact_message_at_end_of_file() -> None:
    assert errors_of("rule R-1 when mid >") == (
        "x.rule:1:20: E103 unexpected end of file in rule R-1, expected a value\n"
        "    1 | rule R-1 when mid >\n"
        "      |                    ^"
    )


def test_every_broken_rule_is_reported_not_just_the_first() -> None:
    text = (
        "rule R-1 when mid > then skip_entry\n"
        "rule R-2 when mid > 1 then skip_entry\n"
        "rule R-3 when (mid > 1 then skip_entry\n"
        "let ok = 1\n"
        "rule R-4 when mid.x > 1 then skip_entry\n"
    )
    with pytest.raises(DslSyntaxError) as info:
        parse_text(text, "x.rule")
    got = [(d.code, d.span.line if d.span else 0) for d in info.value.diagnostics]
    assert got == [("E101", 1), ("E101", 3), ("E105", 5)]


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        (
            "rule R-1 when x.y > 1 then skip_entry",
            "E105",
            "attribute access with '.' is not part of the language in rule R-1",
        ),
        (
            "rule R-1 when abs(x)[0] > 1 then skip_entry",
            "E105",
            "indexing with '[' is not part of the language in rule R-1",
        ),
        (
            "rule R-1 when minute_of_day_utc(ts) % 60 > 1 then skip_entry",
            "E102",
            "there is no modulo operator '%' in rule R-1",
        ),
        (
            "rule R-1 when __import__ > 1 then skip_entry",
            "E102",
            "names cannot start with '_' in rule R-1",
        ),
        ("import os", "E111", "'import' is not part of the language"),
        (
            "rule R-1 when lambda x: x then skip_entry",
            "E111",
            "'lambda' is not part of the language in rule R-1",
        ),
        (
            "rule R-1 when [x for x in y] then skip_entry",
            "E111",
            "'for' is not part of the language in rule R-1",
        ),
        (
            "rule R-1 when x ** 2 > 1 then skip_entry",
            "E101",
            "there is no power operator '**' in rule R-1",
        ),
        (
            'rule R-1 when s == "abc then skip_entry',
            "E106",
            "unterminated string or bad escape in rule R-1",
        ),
        (
            "rule R - 1 when x > 1 then skip_entry",
            "E110",
            "a rule id is written without spaces in rule R",
        ),
        (
            "rule R-1 when x > 1 then size_mult = 2",
            "E104",
            "an action scales an output with '*=', found '=' in rule R-1",
        ),
        (
            "rule R-1 when x > 1e999 then skip_entry",
            "E108",
            "number 1e999 is out of range for a float",
        ),
        (
            "rule R-1 when x > 1e-999 then skip_entry",
            "E108",
            "number 1e-999 is out of range for a float",
        ),
        (
            "rule R-1 when x > " + "9" * 41 + " then skip_entry",
            "E108",
            "number literal longer than 40 characters",
        ),
        (
            'rule R-1 when s == "' + "x" * 1001 + '" then skip_entry',
            "E108",
            "string literal longer than 1000 characters",
        ),
        (
            "rule R-1 priority 1234567890 when x > 1 then skip_entry",
            "E108",
            "priority out of range (at most 9 digits)",
        ),
        (
            "rule R-1 when x > 1 then skip_entry \x00",
            "E102",
            "unexpected character '\\x00' in rule R-1, expected '*=', ',', 'let' or 'rule'",
        ),
        ("let and = 1", "E112", "'and' is a reserved word and cannot be a name in let and"),
        (
            "rule R-1 when and > 1 then skip_entry",
            "E101",
            "expected a value, found 'and' in rule R-1",
        ),
        (
            "rule in when x > 1 then skip_entry",
            "E112",
            "'in' is a reserved word and cannot be a name in rule in",
        ),
    ],
)
def test_syntax_codes(text: str, code: str, message: str) -> None:
    with pytest.raises(DslSyntaxError) as info:
        parse_text(text, "x.rule")
    first = info.value.diagnostics[0]
    assert (first.code, first.message) == (code, message)


def test_nesting_limit() -> None:
    ok = "rule R-1 when " + "-" * (MAX_DEPTH - 5) + "x > 1 then skip_entry"
    parse_text(ok)
    deep = "rule R-1 when " + "-" * 5000 + "x > 1 then skip_entry"
    with pytest.raises(DslSyntaxError) as info:
        parse_text(deep, "x.rule")
    assert [d.code for d in info.value.diagnostics] == ["E109"]
    assert (
        info.value.diagnostics[0].message
        == f"rule R-1 is nested too deeply (more than {MAX_DEPTH} levels)"
    )


def test_parentheses_do_not_count_as_nesting_but_long_chains_are_bounded() -> None:
    parse_text("rule R-1 when " + "(" * 500 + "x" + ")" * 500 + " > 1 then skip_entry")
    wide = "rule R-1 when x" + " + x" * (MAX_ITEM_NODES) + " > 1 then skip_entry"
    with pytest.raises(DslSyntaxError) as info:
        parse_text(wide, "x.rule")
    assert info.value.diagnostics[0].code == "E109"


def test_enormous_file_is_refused_before_lexing() -> None:
    big = "# " + "x" * MAX_SOURCE_BYTES
    with pytest.raises(DslSyntaxError) as info:
        parse(Source("big.rule", big))
    assert [d.code for d in info.value.diagnostics] == ["E107"]


def test_many_rules_parse() -> None:
    text = "\n".join(f"rule R-{i} when x > {i} then size_mult *= 1.01" for i in range(2000))
    assert len(parse_text(text).items) == 2000


def test_diagnostics_are_capped() -> None:
    text = "\n".join(f"rule R-{i} when x > then skip_entry" for i in range(200))
    with pytest.raises(DslError) as info:
        parse_text(text)
    assert len(info.value.diagnostics) == 50


def test_bad_utf8_is_a_diagnostic(tmp_path: object) -> None:
    from pathlib import Path

    p = Path(str(tmp_path)) / "bad.rule"
    p.write_bytes(b"rule R-1 when x > 1 then skip_entry \xff\xfe\n")
    with pytest.raises(DslSyntaxError) as info:
        parse(Source.from_path(p, display="bad.rule"))
    assert info.value.diagnostics[0].code == "E102"
