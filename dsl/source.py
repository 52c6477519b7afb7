"""Source text with a path, and spans into it. Imports nothing from the rest of the project."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_SOURCE_BYTES = 256 * 1024
"""Largest rule file the front end accepts; bigger files are refused with E107 before lexing
(a bundle loader reads no more than this of a file)."""


def show_size(n: int) -> str:
    """A byte count as the limits are written: ``512 KiB``, ``1 MiB``."""
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file; lines and columns are 1-based, ``end_col`` is exclusive."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"

    def sort_key(self) -> tuple[str, int, int]:
        return (self.path, self.line, self.col)


@dataclass(frozen=True, slots=True)
class Source:
    """The text of one rule file and the name it is reported under."""

    path: str
    text: str

    @classmethod
    def from_path(cls, path: str | Path, *, display: str | None = None) -> Source:
        p = Path(path)
        # Undecodable bytes become U+FFFD, which the lexer then reports as E102 at its place.
        return cls(display or str(p), p.read_bytes().decode("utf-8", errors="replace"))

    def line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def span_at(self, line: int, col: int, length: int = 1) -> Span:
        return Span(self.path, line, col, line, col + max(length, 1))

    def span_of_offset(self, offset: int, length: int = 1) -> Span:
        line = self.text.count("\n", 0, offset) + 1
        col = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return self.span_at(line, col, length)
