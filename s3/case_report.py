"""`s3 rules test` helpers: choosing cases (`--run`) and the JUnit XML report (`--junit`)."""

from __future__ import annotations

import fnmatch
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsl.cases import Case, CaseResult
from dsl.errors import Diagnostic


def matches(case: Case, pattern: str) -> bool:
    """A glob (`*`, `?`, `[...]`) against the case's name and its `file: name` label, else a
    case-insensitive substring of the label."""
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(case.name, pattern) or fnmatch.fnmatchcase(case.label, pattern)
    return pattern.lower() in case.label.lower()


def junit(
    path: str,
    results: Sequence[CaseResult],
    diags: Sequence[Diagnostic],
    tapes: Sequence[Any],
    *,
    bundle: str,
) -> None:
    """One `<testsuite>` per case file (and one for tapes), one `<testcase>` per case; a case
    file error is an `<error>` test case of its file."""
    suites: dict[str, list[ET.Element]] = {}
    for r in results:
        file = Path(r.case.where.path).name
        tc = ET.Element(
            "testcase", name=r.case.name, classname=f"{bundle}.{file}", file=str(r.case.where)
        )
        if r.failures:
            f = ET.SubElement(tc, "failure", message=r.failures[0])
            f.text = "\n".join(r.failures)
        if r.warnings:
            ET.SubElement(tc, "system-err").text = "\n".join(r.warnings)
        suites.setdefault(file, []).append(tc)
    for d in diags:
        file = Path(d.span.path).name if d.span else "cases"
        tc = ET.Element("testcase", name=f"{d.code} {d.message}", classname=f"{bundle}.{file}")
        e = ET.SubElement(tc, "error", message=d.message, type=d.code)
        e.text = d.render()
        suites.setdefault(file, []).append(tc)
    for t in tapes:
        tc = ET.Element("testcase", name=Path(t.path).name, classname=f"{bundle}.tapes")
        if t.failures:
            f = ET.SubElement(tc, "failure", message=t.failures[0])
            f.text = "\n".join(t.failures)
        suites.setdefault("tapes", []).append(tc)
    root = ET.Element("testsuites", name=f"s3 rules test {bundle}")
    for name, cases in suites.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=name,
            tests=str(len(cases)),
            failures=str(sum(1 for c in cases if c.find("failure") is not None)),
            errors=str(sum(1 for c in cases if c.find("error") is not None)),
            skipped="0",
        )
        suite.extend(cases)
    root.set("tests", str(sum(len(c) for c in suites.values())))
    ET.indent(root)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
