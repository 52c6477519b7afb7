"""Text to `dsl.nodes.Module`. The only module that imports lark; Lark's exceptions never leave it.

Syntax errors are reported all at once: after an error the failing item (the `rule` or `let` it
sits in) is blanked out and the rest of the file is parsed again, so one bad rule does not hide
the next. Limits on size, nesting and literals keep every later stage bounded.
"""

from __future__ import annotations

import itertools
import re
import threading
from functools import cache
from importlib import resources

from lark import Lark, Token, v_args
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedToken,
    VisitError,
)
from lark.visitors import Transformer_NonRecursive

from dsl import nodes as n
from dsl.errors import Diagnostic, DslSyntaxError
from dsl.guard import bad_char
from dsl.source import MAX_SOURCE_BYTES, Source, Span, show_size
from dsl.suggest import keyword_hint

MAX_DEPTH = 60
"""Deepest expression nesting accepted (E109); keeps the checker, compiler and CPython bounded."""
MAX_ITEM_NODES = 4000
"""Most syntax nodes in one rule or let (E109)."""
MAX_NUMBER_CHARS = 40
MAX_STRING_CHARS = 1000
MAX_RULE_ID_CHARS = 64
MAX_SYNTAX_ERRORS = 50

_TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "SIGNED_INT": "an integer",
    "STRING": "a string",
    "COMP_OP": "a comparison operator",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*' or '/'",
    "RULE_ID_TAIL": "the rest of the rule id",
    "$END": "end of file",
}
_FOREIGN_WORDS = frozenset(
    [
        "import",
        "from",
        "lambda",
        "for",
        "while",
        "def",
        "class",
        "return",
        "if",
        "else",
        "elif",
        "exec",
        "eval",
        "open",
        "print",
        "with",
        "yield",
        "global",
        "nonlocal",
        "del",
        "assert",
        "try",
        "except",
        "raise",
        "async",
        "await",
        "is",
    ]
)
KEYWORDS = frozenset(
    ["let", "rule", "when", "then", "priority", "and", "or", "not", "in", "true", "false"]
)
"""Reserved words: never a feature, let, function, action or rule id."""

_ITEM_START = re.compile(
    r"^[ \t]*(rule|let|" + "|".join(sorted(_FOREIGN_WORDS)) + r")\b", re.MULTILINE
)

_local = threading.local()


def _record_comment(token: Token) -> None:
    sink = getattr(_local, "comments", None)
    if sink is not None:
        sink.append((token.line, str(token)))


@cache
def _lark() -> Lark:
    text = resources.files("dsl.grammar").joinpath("rules.lark").read_text(encoding="utf-8")
    return Lark(
        text,
        parser="lalr",
        strict=True,
        propagate_positions=True,
        maybe_placeholders=True,
        lexer_callbacks={"COMMENT": _record_comment},
    )


def _describe(terminal: str) -> str:
    if terminal in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[terminal]
    try:
        pattern = _lark().get_terminal(terminal).pattern
    except KeyError:
        return terminal.lower()
    return f"'{pattern.value}'" if pattern.type == "str" else terminal.lower()


_OPERATORS = frozenset({"COMP_OP", "ADD_OP", "MUL_OP", "AND", "OR", "IN", "NOT"})
_OPERANDS = frozenset({"NAME", "NUMBER", "STRING", "LPAR", "LSQB", "MINUS", "TRUE", "FALSE"})


def _expected(names: set[str]) -> str:
    """The expected set in words, with operators and operands summarised as such."""
    names = {t for t in names if t not in ("WS", "COMMENT")}
    words = []
    if len(names & _OPERATORS) >= 3:
        words.append("an operator")
        names -= _OPERATORS
    if len(names & _OPERANDS) >= 3:
        words.append("a value")
        names -= _OPERANDS | {"NOT"}
    words += sorted({_describe(t) for t in names})
    if not words:
        return "nothing more"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _found(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    return f"'{token}'"


def _item_context(text: str, offset: int) -> str:
    starts = [m for m in _ITEM_START.finditer(text, 0, offset + 1)]
    if not starts:
        return ""
    m = re.match(r"[ \t]*(rule|let)[ \t]+([A-Za-z0-9_-]+)", text[starts[-1].start() :])
    if not m:
        return ""
    return f" in {m.group(1)} {m.group(2)}"


def _syntax_diagnostic(source: Source, text: str, exc: LarkError) -> tuple[Diagnostic, int]:
    """Turn a Lark exception into a diagnostic and the offset where it happened."""
    if isinstance(exc, UnexpectedCharacters):
        offset = exc.pos_in_stream or 0
        span = source.span_at(exc.line, exc.column)
        ctx = _item_context(text, offset)
        char = exc.char
        if char == ".":
            return Diagnostic(
                "E105",
                f"attribute access with '.' is not part of the language{ctx}",
                span,
                "rules can only read features, lets and params by name",
            ), offset
        if char == "_":
            return Diagnostic(
                "E102",
                f"names cannot start with '_'{ctx}",
                span,
                "names are letters, digits and '_', starting with a letter",
            ), offset
        if char == "%":
            return Diagnostic(
                "E102",
                f"there is no modulo operator '%'{ctx}",
                span,
                "for the time of day use hour_utc(ts) or minute_of_day_utc(ts), with "
                "between_wrap(x, lo, hi) for a range past midnight",
            ), offset
        if char == '"':
            return Diagnostic(
                "E106",
                f"unterminated string or bad escape{ctx}",
                span,
                'strings are on one line; the escapes are \\" \\\\ \\n \\t',
            ), offset
        shown = f"'{char}'" if char.isprintable() and not char.isspace() else repr(char)
        return Diagnostic(
            "E102",
            f"unexpected character {shown}{ctx}, expected {_expected(set(exc.allowed or ()))}",
            span,
        ), offset
    if isinstance(exc, UnexpectedEOF):
        lines = text.splitlines() or [""]
        span = source.span_at(len(lines), len(lines[-1]) + 1)
        return Diagnostic(
            "E103", f"unexpected end of file, expected {_expected(set(exc.expected))}", span
        ), len(text)
    assert isinstance(exc, UnexpectedToken)
    token = exc.token
    accepts = set(exc.accepts or exc.expected)
    if token.type == "$END":
        lines = text.splitlines() or [""]
        span = source.span_at(len(lines), len(lines[-1]) + 1)
        offset = len(text)
        ctx = _item_context(text, max(offset - 1, 0))
        return Diagnostic(
            "E103", f"unexpected end of file{ctx}, expected {_expected(accepts)}", span
        ), offset
    offset = token.start_pos or 0
    span = Span(
        source.path, token.line or 1, token.column or 1, token.end_line or 1, token.end_column or 2
    )
    ctx = _item_context(text, offset)
    if token.type == "EQUAL" and ("SCALE_OP" in accepts or "COMP_OP" in accepts):
        if "SCALE_OP" in accepts:
            return Diagnostic(
                "E104",
                f"an action scales an output with '*=', found '='{ctx}",
                span,
                "write e.g. size_mult *= 1.2",
            ), offset
        return Diagnostic(
            "E104", f"'=' is not a comparison{ctx}", span, "use '==' to compare values"
        ), offset
    if str(token) in KEYWORDS and accepts == {"NAME"}:
        return Diagnostic(
            "E112", f"'{token}' is a reserved word and cannot be a name{ctx}", span
        ), offset
    if token.type in ("MINUS", "ADD_OP") and "RULE_ID_TAIL" in accepts:
        return Diagnostic(
            "E110", f"a rule id is written without spaces{ctx}", span, "write ids like R-023"
        ), offset
    if token.type == "LSQB" and "COMP_OP" in accepts:
        return Diagnostic(
            "E105",
            f"indexing with '[' is not part of the language{ctx}",
            span,
            "rules can only read features, lets and params by name",
        ), offset
    start, word = _word_before(text, offset)
    if word in _FOREIGN_WORDS:
        return Diagnostic(
            "E111",
            f"'{word}' is not part of the language{ctx}",
            source.span_of_offset(start, len(word)),
            _foreign_hint(text, start),
        ), offset
    if token.type == "MUL_OP" and text[offset - 1 : offset] == "*":
        return Diagnostic(
            "E101", f"there is no power operator '**'{ctx}", span, "multiply explicitly, e.g. x * x"
        ), offset
    if token.type == "NAME" and str(token) in _FOREIGN_WORDS:
        return Diagnostic(
            "E111",
            f"'{token}' is not part of the language{ctx}",
            span,
            _foreign_hint(text, offset),
        ), offset
    expected = _expected(accepts)
    return Diagnostic(
        "E101",
        f"expected {expected}, found {_found(token)}{ctx}",
        span,
        keyword_hint(str(token), expected) if token.type == "NAME" else None,
    ), offset


_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


def _word_before(text: str, offset: int) -> tuple[int, str]:
    """The run of letters and '_' that ends right before ``offset`` (whitespace skipped), and
    where it starts. One backward scan: linear, where a regex over ``text[:offset]`` anchored at
    the end was quadratic in the length of a run of letters (24 s on a 40 KB file)."""
    end = offset
    while end > 0 and text[end - 1].isspace():
        end -= 1
    start = end
    while start > 0 and text[start - 1] in _WORD_CHARS:
        start -= 1
    return start, text[start:end]


def _foreign_hint(text: str, start: int) -> str:
    if text[text.rfind("\n", 0, start) + 1 : start].strip() == "":
        return "a rule file holds only 'let' definitions and 'rule' blocks"
    return "conditions are built from comparisons, and/or/not, 'in' and the listed functions"


def _blank_item_at(text: str, offset: int) -> tuple[int, int] | None:
    """Where the item around ``offset`` is, to be blanked out (keeping newlines) so parsing can
    resume after it; None if nothing would change."""
    line_start = text.rfind("\n", 0, offset) + 1
    starts = [m.start() for m in _ITEM_START.finditer(text)]
    before = [s for s in starts if s <= line_start] or [0]
    after = [s for s in starts if s > offset]
    # If the error sits on the item's own first line and nothing follows, stop.
    start, end = before[-1], (after[0] if after else len(text))
    if end <= start:
        return None
    if _blank(text[start:end]) == text[start:end]:
        return None
    return start, end


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def _complete_before(text: str, start: int, offset: int) -> bool:
    """Whether every item before ``start`` is complete: the item there opens with 'rule' or
    'let' and the error lies past that keyword, so the parser had taken the keyword as the start
    of a new item (neither can appear inside one)."""
    m = _ITEM_START.match(text, start)
    return m is not None and m.group(1) in ("rule", "let") and offset > m.start(1)


class _Build(Transformer_NonRecursive):  # type: ignore[type-arg]
    """Builds nodes only; never evaluates. Collects literal and rule-id problems as diagnostics."""

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self.diags: list[Diagnostic] = []

    def _span(self, meta: object) -> Span:
        return Span(
            self.source.path,
            getattr(meta, "line", 1),
            getattr(meta, "column", 1),
            getattr(meta, "end_line", 1),
            getattr(meta, "end_column", 2),
        )

    def _tok_span(self, tok: Token) -> Span:
        return Span(
            self.source.path, tok.line or 1, tok.column or 1, tok.end_line or 1, tok.end_column or 2
        )

    @v_args(meta=True)
    def start(self, meta: object, items: list[n.Item]) -> tuple[n.Item, ...]:
        return tuple(items)

    @v_args(meta=True)
    def let_def(self, meta: object, c: list[object]) -> n.LetDef:
        name, expr = c
        assert isinstance(name, Token)
        return n.LetDef(str(name), expr, self._span(meta), self._tok_span(name))  # type: ignore[arg-type]

    @v_args(meta=True)
    def rule_def(self, meta: object, c: list[object]) -> n.Rule:
        head, title, prio, when, actions = c
        assert isinstance(head, tuple)
        rule_id: str = head[0]
        id_span: Span = head[1]
        return n.Rule(
            rule_id,
            self.string([title]).value if isinstance(title, Token) else None,
            prio if isinstance(prio, int) else 0,
            when,  # type: ignore[arg-type]
            actions,  # type: ignore[arg-type]
            self._span(meta),
            id_span,
        )

    def rule_id(self, c: list[Token]) -> tuple[str, Span]:
        first, last = c[0], c[-1]
        span = Span(
            self.source.path,
            first.line or 1,
            first.column or 1,
            last.end_line or 1,
            last.end_column or 2,
        )
        for prev, tok in itertools.pairwise(c):
            if tok.start_pos != prev.end_pos:
                self.diags.append(
                    Diagnostic(
                        "E110",
                        "a rule id is written without spaces",
                        span,
                        f"write '{''.join(str(t) for t in c)}'",
                    )
                )
                break
        text = "".join(str(t) for t in c)
        if len(text) > MAX_RULE_ID_CHARS:
            self.diags.append(
                Diagnostic("E108", f"rule id longer than {MAX_RULE_ID_CHARS} characters", span)
            )
        return text, span

    def priority(self, c: list[Token]) -> int:
        tok = c[0]
        if len(str(tok).lstrip("+-")) > 9:
            self.diags.append(
                Diagnostic("E108", "priority out of range (at most 9 digits)", self._tok_span(tok))
            )
            return 0
        return int(str(tok))

    def actions(self, c: list[n.Action]) -> tuple[n.Action, ...]:
        return tuple(c)

    @v_args(meta=True)
    def scale(self, meta: object, c: list[object]) -> n.Scale:
        target, _op, factor = c
        assert isinstance(target, Token)
        return n.Scale(str(target), factor, self._span(meta), self._tok_span(target))  # type: ignore[arg-type]

    @v_args(meta=True)
    def flag(self, meta: object, c: list[Token]) -> n.Flag:
        return n.Flag(str(c[0]), self._span(meta))

    @v_args(meta=True)
    def or_op(self, meta: object, c: list[n.Expr]) -> n.BoolOp:
        return n.BoolOp("or", tuple(c), self._span(meta))

    @v_args(meta=True)
    def and_op(self, meta: object, c: list[n.Expr]) -> n.BoolOp:
        return n.BoolOp("and", tuple(c), self._span(meta))

    @v_args(meta=True)
    def not_op(self, meta: object, c: list[n.Expr]) -> n.Not:
        return n.Not(c[0], self._span(meta))

    @v_args(meta=True)
    def compare(self, meta: object, c: list[object]) -> n.Compare:
        operands = tuple(c[0::2])
        ops = tuple(str(t) for t in c[1::2])
        return n.Compare(operands, ops, self._span(meta))  # type: ignore[arg-type]

    @v_args(meta=True)
    def member(self, meta: object, c: list[n.Expr]) -> n.Member:
        return n.Member(c[0], c[1], False, self._span(meta))

    @v_args(meta=True)
    def not_member(self, meta: object, c: list[n.Expr]) -> n.Member:
        return n.Member(c[0], c[1], True, self._span(meta))

    @v_args(meta=True)
    def binop(self, meta: object, c: list[object]) -> n.BinOp:
        left, op, right = c
        return n.BinOp(str(op), left, right, self._span(meta))  # type: ignore[arg-type]

    @v_args(meta=True)
    def neg(self, meta: object, c: list[n.Expr]) -> n.Neg:
        return n.Neg(c[0], self._span(meta))

    def number(self, c: list[Token]) -> n.Number:
        tok = c[0]
        text = str(tok)
        span = self._tok_span(tok)
        digits = text.replace("_", "")
        if len(text) > MAX_NUMBER_CHARS:
            self.diags.append(
                Diagnostic(
                    "E108", f"number literal longer than {MAX_NUMBER_CHARS} characters", span
                )
            )
            return n.Number(0, text, span)
        if any(ch in digits for ch in ".eE"):
            value: float | int = float(digits)
            mantissa = digits.lower().split("e")[0]
            if value == float("inf") or (value == 0.0 and mantissa.strip("0.") != ""):
                self.diags.append(
                    Diagnostic("E108", f"number {text} is out of range for a float", span)
                )
                return n.Number(0, text, span)
        else:
            value = int(digits)
        return n.Number(value, text, span)

    def string(self, c: list[Token]) -> n.String:
        tok = c[0]
        raw = str(tok)[1:-1]
        span = self._tok_span(tok)
        if len(raw) > MAX_STRING_CHARS:
            self.diags.append(
                Diagnostic(
                    "E108", f"string literal longer than {MAX_STRING_CHARS} characters", span
                )
            )
            raw = raw[:MAX_STRING_CHARS]
        ch = bad_char(raw.replace("\t", " "))
        if ch is not None:  # it would reach diagnostics, logs and terminals as it is
            self.diags.append(
                Diagnostic(
                    "E106",
                    f"string literal holds a control or non-printable character ('{ch}')",
                    span,
                    "write \\n or \\t for a newline or a tab; other control characters "
                    "cannot be written",
                )
            )
        value = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), raw)
        return n.String(value, span)

    @v_args(meta=True)
    def true(self, meta: object, c: list[object]) -> n.Bool:
        return n.Bool(True, self._span(meta))

    @v_args(meta=True)
    def false(self, meta: object, c: list[object]) -> n.Bool:
        return n.Bool(False, self._span(meta))

    @v_args(meta=True)
    def call(self, meta: object, c: list[object]) -> n.Call:
        func = c[0]
        assert isinstance(func, Token)
        args = tuple(a for a in c[1:] if a is not None)
        return n.Call(str(func), args, self._span(meta), self._tok_span(func))  # type: ignore[arg-type]

    @v_args(meta=True)
    def index(self, meta: object, c: list[object]) -> n.Index:
        name, key = c
        assert isinstance(name, Token)
        return n.Index(str(name), key, self._span(meta))  # type: ignore[arg-type]

    def name(self, c: list[Token]) -> n.Name:
        return n.Name(str(c[0]), self._tok_span(c[0]))

    @v_args(meta=True)
    def list(self, meta: object, c: list[object]) -> n.ListLit:
        return n.ListLit(tuple(x for x in c if x is not None), self._span(meta))  # type: ignore[misc]


def _check_limits(items: tuple[n.Item, ...]) -> list[Diagnostic]:
    diags = []
    for item in items:
        if n.depth(item) > MAX_DEPTH:
            message = f"{_item_name(item)} is nested too deeply (more than {MAX_DEPTH} levels)"
            hint = "name parts of the expression with 'let'"
        elif n.size(item) > MAX_ITEM_NODES:
            message = f"{_item_name(item)} is too large (more than {MAX_ITEM_NODES} nodes)"
            hint = "split it into lets or several rules"
        else:
            continue
        diags.append(Diagnostic("E109", message, _item_span(item), hint))
    return diags


def _item_span(item: n.Item) -> Span:
    return item.id_span if isinstance(item, n.Rule) else item.name_span


def _item_name(item: n.Item) -> str:
    return f"rule {item.rule_id}" if isinstance(item, n.Rule) else f"let {item.name}"


def parse(source: Source) -> n.Module:
    """Parse one rule file.

    Args:
        source: the text and the path it is reported under.

    Returns:
        The module's items, with spans, and its comments (for the formatter).

    Raises:
        DslSyntaxError: with every syntax and limit diagnostic found in the file.
    """
    diags: list[Diagnostic] = []
    texts = {source.path: source.text}
    if len(source.text.encode("utf-8", errors="replace")) > MAX_SOURCE_BYTES:
        raise DslSyntaxError(
            [
                Diagnostic(
                    "E107",
                    f"rule file larger than {show_size(MAX_SOURCE_BYTES)}",
                    Span(source.path, 1, 1, 1, 2),
                    "split the rules over several files",
                )
            ],
            texts=texts,
        )
    text = source.text
    comments: list[tuple[int, str]] = []
    tree = None
    # After an error the failing item is blanked out and parsing starts again. Items before a
    # known item boundary (`resume`) parsed cleanly already, so they are blanked too for the
    # search of the next error (whitespace costs one regex match): each part of the file is
    # parsed about once however many errors it has, plus one last parse of the whole text for
    # the tree. (Parsing everything again after each error took 50 parses for 50 errors.)
    resume = 0
    blank_all = ""
    errors = 0
    while errors < MAX_SYNTAX_ERRORS:
        _local.comments = comments = []
        work = text if resume == 0 else blank_all[:resume] + text[resume:]
        try:
            tree = _lark().parse(work)
            if resume == 0:
                break
            resume, tree = 0, None  # every error found: one parse of the whole text for the tree
            continue
        except (UnexpectedCharacters, UnexpectedToken, UnexpectedEOF) as exc:
            errors += 1
            diag, offset = _syntax_diagnostic(source, work, exc)
            if diag not in diags:
                diags.append(diag)
            where = _blank_item_at(work, offset)
            if where is None:
                break
            start, end = where
            if _complete_before(work, start, offset):
                resume = end
                blank_all = blank_all or _blank(source.text)
            text = text[:start] + _blank(text[start:end]) + text[end:]
        finally:
            _local.comments = None
    if tree is None:
        raise DslSyntaxError(diags, texts=texts)
    builder = _Build(source)
    try:
        items = builder.transform(tree)
    except VisitError as exc:  # a builder bug, not the user's: still report it as a diagnostic
        raise DslSyntaxError(
            [*diags, Diagnostic("E101", f"could not build the tree: {exc.orig_exc}", None)],
            texts=texts,
        ) from None
    item_diags = [*builder.diags, *_check_limits(items)]
    diags.extend(item_diags)
    module = n.Module(source.path, items, tuple(comments))
    if diags:
        # Items that parsed cleanly still go on to be checked; an item with its own problem
        # (a bad literal, a limit) does not, so it cannot cause follow-on errors.
        bad_lines = {d.span.line for d in item_diags if d.span is not None}
        clean = tuple(
            i for i in items if not any(i.span.line <= ln <= i.span.end_line for ln in bad_lines)
        )
        partial = n.Module(source.path, clean, tuple(comments))
        raise DslSyntaxError(diags, texts=texts, partial=partial)
    return module


def parse_text(text: str, path: str = "<string>") -> n.Module:
    """Parse rule text given directly (tests, the REPL, `s3 rules explain --rule`)."""
    return parse(Source(path, text))
