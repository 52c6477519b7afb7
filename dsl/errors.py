"""Diagnostics: the one error currency of the DSL, rendered with file:line:col and a caret excerpt.

Imports nothing from the rest of the project but `dsl.source`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dsl.source import Span

MAX_DIAGNOSTICS = 50
"""Diagnostics reported per run; the rest are counted in one E100/W100 line (OPA caps at 10)."""


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding: a stable code, a lower-case message, where, and maybe a hint."""

    code: str
    message: str
    span: Span | None
    hint: str | None = None
    severity: Severity = Severity.ERROR

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def sort_key(self) -> tuple[str, int, int, int, int, str, str]:
        if self.span is None:
            return ("", 0, 0, 0, 0, self.code, self.message)
        s = self.span
        return (s.path, s.line, s.col, s.end_line, s.end_col, self.code, self.message)

    def to_json(self) -> dict[str, object]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "file": self.span.path if self.span else None,
            "line": self.span.line if self.span else None,
            "col": self.span.col if self.span else None,
            "end_line": self.span.end_line if self.span else None,
            "end_col": self.span.end_col if self.span else None,
            "hint": self.hint,
        }

    def render(self, texts: Mapping[str, str] | None = None) -> str:
        """Render as ``path:line:col: CODE message`` plus the source line and a caret run."""
        where = f"{self.span}: " if self.span else ""
        kind = "" if self.is_error else "warning "
        head = f"{where}{kind}{self.code} {self.message}"
        if self.span is None or texts is None or self.span.path not in texts:
            return head + (f"\n      = help: {self.hint}" if self.hint else "")
        lines = texts[self.span.path].splitlines()
        if not 0 < self.span.line <= len(lines):
            return head + (f"\n      = help: {self.hint}" if self.hint else "")
        text = lines[self.span.line - 1].expandtabs(1)
        # Untrusted text never reaches a terminal as it is: one U+FFFD per unprintable
        # character keeps the caret under the right column.
        text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
        if len(text) > 160:  # a minified or generated line: show the part around the caret
            start = max(self.span.col - 60, 0)
            text, col = text[start : start + 120], self.span.col - start
        else:
            col = self.span.col
        width = (
            self.span.end_col - self.span.col
            if self.span.end_line == self.span.line
            else len(text) - col + 1
        )
        width = max(1, min(width, len(text) - col + 1))
        gutter = f"{self.span.line:>5}"
        caret = " " * (col - 1) + "^" * width
        tail = f" help: {self.hint}" if self.hint else ""
        return f"{head}\n{gutter} | {text}\n{' ' * 5} | {caret}{tail}"


def sort_and_cap(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Deduplicate, sort by place, and cap at MAX_DIAGNOSTICS (errors are kept before warnings).

    When some are left out, one last diagnostic (E100, or W100 if only warnings were left out)
    says how many, so a capped report never looks complete.
    """
    diags = list(diags)
    earlier = [d for d in diags if d.code in ("E100", "W100")]  # summaries of an earlier cap
    unique = sorted({d for d in diags if d.code not in ("E100", "W100")}, key=Diagnostic.sort_key)
    errors = [d for d in unique if d.is_error]
    warnings = [d for d in unique if not d.is_error]
    ranked = errors + warnings
    kept = sorted(ranked[:MAX_DIAGNOSTICS], key=Diagnostic.sort_key)
    left = ranked[MAX_DIAGNOSTICS:]
    if left:
        n_err = sum(d.is_error for d in left)
        more = f"{len(left)} more diagnostic{'s' * (len(left) != 1)} not shown"
        n_warn = len(left) - n_err
        more += f" ({n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)})"
        more += f"; at most {MAX_DIAGNOSTICS} are reported"
        kept.append(
            Diagnostic(
                "E100" if n_err else "W100",
                more,
                None,
                "fix these and run again",
                Severity.ERROR if n_err else Severity.WARNING,
            )
        )
    return kept + earlier


class DslError(Exception):
    """Raised by a front-end stage with *all* the error diagnostics it found (never only the first)."""

    def __init__(
        self, diagnostics: Iterable[Diagnostic], *, texts: Mapping[str, str] | None = None
    ):
        # Sorted but not capped: the reporting edge (a build result, the CLI) caps once.
        self.diagnostics: tuple[Diagnostic, ...] = tuple(
            sorted(set(diagnostics), key=Diagnostic.sort_key)
        )
        self.texts = dict(texts or {})
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.texts) for d in sort_and_cap(self.diagnostics))


class DslSyntaxError(DslError):
    """Errors of the E1xx family: the text is not a module of the language.

    ``partial`` holds the items of the file that parsed cleanly (or None), so that later stages
    can still report their own errors in the rest of the file.
    """

    def __init__(
        self,
        diagnostics: Iterable[Diagnostic],
        *,
        texts: Mapping[str, str] | None = None,
        partial: Any = None,
    ):
        super().__init__(diagnostics, texts=texts)
        self.partial = partial
