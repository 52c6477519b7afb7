"""The reader-facing docs cannot rot: every example in them is run here.

`docs/diagnostics.md` must have one section per diagnostic code the `dsl` and `s3` sources can
emit (and no other), and each section's examples must produce exactly that code and exactly the output shown.
`docs/dsl.md` must describe a bundle that compiles, with case files that pass, and its tables of
functions, limits, reserved words and `Outcome` fields must match the code. The conventions the
examples follow are described at the top of each document.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dsl import build_bundle, parse_manifest
from dsl.bundle import FUNCTION_NAMES, RESERVED_WORDS
from dsl.cases import case_files, load_cases, run_case
from dsl.checker import FUNCTIONS
from dsl.parser import KEYWORDS
from dsl.runtime import Outcome
from s3.cli import build_parser
from s3.cli import main as s3_main
from s3.rules_cli import _build as build_with_engine_sections

ROOT = Path(__file__).resolve().parents[2]
DSL_DIR = ROOT / "dsl"
S3_DIR = ROOT / "s3"
DIAGNOSTICS_MD = ROOT / "docs" / "diagnostics.md"
DSL_MD = ROOT / "docs" / "dsl.md"

SOURCE_CODE = re.compile(r'"([EW][1-4]\d\d)"')
CODE_HEADING = re.compile(r"^## ([EW][1-4]\d\d) — \S.*$", re.M)
ANY_H2 = re.compile(r"^## .*$", re.M)
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
CODE_IN_TEXT = re.compile(r"\b([EW][1-4]\d\d)\b")
COMMANDS = ("lint", "strict", "explain", "test", "python")


# -- reading the documents ---------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced block: its info string split into words, its text, and its line in the file."""

    words: tuple[str, ...]
    body: str
    line: int

    @property
    def kind(self) -> tuple[str, ...]:
        return self.words[:2]


@dataclass
class Example:
    """Input blocks up to and including the ```text <command>``` block that shows their output."""

    code: str
    line: int
    manifest: str | None = None
    rules: dict[str, str] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    case: str | None = None
    python: str | None = None
    command: str = ""
    expected: str = ""

    @property
    def id(self) -> str:
        return f"{self.code}@{self.line}"


def blocks(text: str, start_line: int = 1) -> list[Block]:
    out = []
    for m in FENCE.finditer(text):
        line = start_line + text.count("\n", 0, m.start())
        out.append(Block(tuple(m.group("info").split()), m.group("body"), line))
    return out


def code_sections(text: str) -> dict[str, tuple[int, str]]:
    """Code -> (line of the heading, text up to the next ``##`` heading)."""
    heads = list(ANY_H2.finditer(text))
    out: dict[str, tuple[int, str]] = {}
    for i, h in enumerate(heads):
        m = CODE_HEADING.match(h.group(0))
        if m is None:
            continue
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        assert m.group(1) not in out, f"two sections for {m.group(1)}"
        out[m.group(1)] = (text.count("\n", 0, h.start()) + 1, text[h.start() : end])
    return out


def preamble(text: str) -> str:
    first = CODE_HEADING.search(text)
    return text[: first.start()] if first else text


def shared_inputs(text: str) -> tuple[str, dict[str, Any]]:
    """The doc-wide ```toml bundle``` manifest and ```json features``` snapshot of the preamble."""
    found = {b.kind: b.body for b in blocks(preamble(text))}
    return found[("toml", "bundle")], json.loads(found[("json", "features")])


def examples(code: str, section: str, line: int) -> list[Example]:
    out: list[Example] = []
    ex = Example(code, line)
    for b in blocks(section, line):
        match b.kind:
            case ("toml", "bundle"):
                ex.manifest = b.body
            case ("rule",):
                ex.rules["main.rule"] = b.body
            case ("rule", name):
                ex.rules[name] = b.body
            case ("json", "features"):
                ex.features = json.loads(b.body)
            case ("toml", "case"):
                ex.case = b.body
            case ("python",):
                ex.python = b.body
            case ("text", command) if command in COMMANDS:
                ex.command, ex.expected, ex.line = command, b.body, b.line
                out.append(ex)
                ex = Example(code, line)
            case _:
                raise AssertionError(
                    f"{code}: unknown block ```{' '.join(b.words)} at line {b.line}"
                )
    assert ex == Example(code, line), f"{code}: input blocks after the last output block"
    return out


def diagnostics_doc() -> str:
    return DIAGNOSTICS_MD.read_text(encoding="utf-8")


def all_examples() -> list[Example]:
    text = diagnostics_doc()
    return [
        ex
        for code, (line, section) in code_sections(text).items()
        for ex in examples(code, section, line)
    ]


# -- running an example ------------------------------------------------------------------------


def _cli(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        s3_main(argv)
    return out.getvalue()


def run_example(
    ex: Example, shared_manifest: str, shared_features: dict[str, Any], workdir: Path
) -> tuple[str, set[str]]:
    """Lay the example out as ``workdir/bundle`` and run its command there.

    Returns what the command printed (as the doc shows it) and the codes the library itself
    reports for the same input, found without reading the printed text where possible.
    """
    root = workdir / "bundle"
    root.mkdir(parents=True)
    (root / "bundle.toml").write_text(
        shared_manifest if ex.manifest is None else ex.manifest, encoding="utf-8"
    )
    for name, text in ex.rules.items():
        (root / name).write_text(text, encoding="utf-8")
    if ex.case is not None:
        (root / "cases").mkdir()
        (root / "cases" / "main.toml").write_text(ex.case, encoding="utf-8")
    features = {**shared_features, **ex.features}
    with contextlib.chdir(workdir):
        if ex.command in ("lint", "strict"):
            strict = ex.command == "strict"
            printed = _cli(["rules", "lint", "bundle", *(["--strict"] if strict else [])])
            # the rules and, when the manifest has any, the engine sections (E308, E309)
            codes = {
                d.code for d in build_with_engine_sections("bundle", strict=strict).diagnostics
            }
        elif ex.command == "explain":
            printed = _cli(["rules", "explain", "bundle", "--features", json.dumps(features)])
            printed = printed.split("\n\n")[0].rstrip("\n") + "\n"  # the summary, not the trace
            ruleset = build_bundle("bundle").ruleset
            assert ruleset is not None, f"{ex.id}: the example bundle does not compile"
            snapshot, problems = ruleset.schema.validate(features)
            codes = {p.code for p in problems} or {
                f.code for f in ruleset.evaluate(snapshot).faults
            }
        elif ex.command == "test":
            printed = _cli(["rules", "test", "bundle"])
            codes = {d.code for d in build_bundle("bundle").diagnostics}
            codes |= {d.code for d in load_cases(case_files(Path("bundle")))[1]}
        else:
            assert ex.python is not None, f"{ex.id}: ```text python without a ```python block"
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(ex.python, f"diagnostics.md:{ex.code}", "exec"), {"__name__": "doc"})
            printed = out.getvalue()
            codes = set(CODE_IN_TEXT.findall(printed))
    return printed, codes


# -- diagnostics.md ----------------------------------------------------------------------------


def codes_in_sources() -> set[str]:
    """Every code any package emits: the language's (`dsl/`) and the engine's (`s3/`, e.g. the
    engine sections of a bundle in `s3/config`)."""
    found: set[str] = set()
    for pkg in (DSL_DIR, S3_DIR):
        for path in sorted(pkg.rglob("*.py")):
            found |= set(SOURCE_CODE.findall(path.read_text(encoding="utf-8")))
    return found


def test_the_code_scan_finds_codes_of_every_family() -> None:
    # Guards the regex itself: an empty or partial scan would make the next test vacuous.
    found = codes_in_sources()
    assert {c[:2] for c in found} >= {"E1", "E2", "E3", "E4", "W2", "W3"}
    assert {"E101", "E204", "E410", "W201", "E308", "E309"} <= found


def test_every_code_in_the_sources_has_a_section_and_every_section_a_code() -> None:
    documented = set(code_sections(diagnostics_doc()))
    in_sources = codes_in_sources()
    assert sorted(in_sources - documented) == [], "codes the sources emit but the catalogue lacks"
    assert sorted(documented - in_sources) == [], "sections for codes the sources never emit"


def test_sections_are_in_code_order_and_listed_in_the_index() -> None:
    text = diagnostics_doc()
    order = list(code_sections(text))
    assert order == sorted(order, key=lambda c: (c[0] != "E", c))
    index = preamble(text)
    listed = re.findall(r"^\| \[([EW][1-4]\d\d)\]\(#", index, re.M)
    assert listed == order


def test_every_section_has_a_meaning_an_example_and_a_fix() -> None:
    for code, (line, section) in code_sections(diagnostics_doc()).items():
        assert examples(code, section, line), f"{code} has no runnable example"
        assert "**Fix.**" in section, f"{code} has no fix"
        prose = FENCE.sub("", section).split("\n", 1)[1]
        assert len(prose.split()) >= 8, f"{code} does not say what it means"


@pytest.mark.parametrize("ex", all_examples(), ids=lambda ex: ex.id)
def test_diagnostic_example_produces_its_code_and_the_output_shown(
    ex: Example, tmp_path: Path
) -> None:
    manifest, features = shared_inputs(diagnostics_doc())
    printed, codes = run_example(ex, manifest, features, tmp_path)
    assert codes == {ex.code}
    assert printed == ex.expected


def test_the_shared_schema_and_snapshot_are_clean(
    tmp_path: Path,
) -> None:
    # The shared bundle and snapshot are themselves clean: a code an example shows comes from the
    # example, not from a broken schema.
    manifest, features = shared_inputs(diagnostics_doc())
    root = tmp_path / "clean"
    root.mkdir()
    (root / "bundle.toml").write_text(manifest, encoding="utf-8")
    (root / "main.rule").write_text("rule R-1 when mid > 0 then size_mult *= 1.5\n")
    result = build_bundle(root)
    assert result.diagnostics == ()
    assert result.ruleset is not None
    snapshot, problems = result.ruleset.schema.validate(features)
    assert problems == []
    outcome = result.ruleset.evaluate(snapshot)
    assert (outcome.fired, outcome.faults, outcome.size_mult) == (("R-1",), (), 1.5)


def test_the_example_runner_reports_what_lint_prints(tmp_path: Path) -> None:
    manifest, features = shared_inputs(diagnostics_doc())
    ex = Example("E201", 1, rules={"main.rule": "rule R-1 when sprd > 1 then skip_entry\n"})
    ex.command = "lint"
    printed, codes = run_example(ex, manifest, features, tmp_path)
    assert codes == {"E201"}
    assert printed.startswith("bundle/main.rule:1:15: E201 unknown name 'sprd' in rule R-1\n")


# -- dsl.md ------------------------------------------------------------------------------------


def dsl_doc() -> str:
    return DSL_MD.read_text(encoding="utf-8")


def dsl_blocks() -> list[Block]:
    return blocks(dsl_doc())


def _section(text: str, title: str) -> str:
    m = re.search(rf"^(#+) {re.escape(title)}\s*$", text, re.M)
    assert m is not None, f"dsl.md has no section '{title}'"
    level = len(m.group(1))
    rest = text[m.end() :]
    nxt = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: nxt.start()] if nxt else rest


def _doc_bundle(tmp_path: Path) -> Path:
    """Every plain ```rule block of dsl.md, in order, as one bundle with its reference manifest."""
    manifests = [b for b in dsl_blocks() if b.kind == ("toml", "bundle")]
    rules = [b for b in dsl_blocks() if b.words == ("rule",)]
    root = tmp_path / "docbundle"
    root.mkdir()
    (root / "bundle.toml").write_text(manifests[0].body, encoding="utf-8")
    for i, b in enumerate(rules):
        (root / f"{i:02d}_line{b.line}.rule").write_text(b.body, encoding="utf-8")
    return root


def test_dsl_md_manifests_are_valid() -> None:
    manifests = [b for b in dsl_blocks() if b.kind == ("toml", "bundle")]
    assert manifests, "dsl.md shows no bundle.toml"
    for b in manifests:
        manifest, diags = parse_manifest(f"dsl.md:{b.line}", b.body)
        assert manifest is not None and diags == [], (b.line, [d.render() for d in diags])


def test_dsl_md_rules_compile_into_one_bundle(tmp_path: Path) -> None:
    result = build_bundle(_doc_bundle(tmp_path))
    assert [d.render(result.texts) for d in result.diagnostics] == []
    assert result.ruleset is not None
    assert len(result.ruleset.rules) >= 8


def test_dsl_md_rule_blocks_marked_with_a_code_give_exactly_that_code(tmp_path: Path) -> None:
    manifest = next(b for b in dsl_blocks() if b.kind == ("toml", "bundle")).body
    marked = [b for b in dsl_blocks() if b.words[:1] == ("rule",) and len(b.words) == 2]
    assert marked, "dsl.md shows no failing example"
    for b in marked:
        (key, _, want) = b.words[1].partition("=")
        assert key in ("error", "warning") and re.fullmatch(r"[EW][1-4]\d\d", want), b.words
        root = tmp_path / f"marked{b.line}"
        root.mkdir()
        (root / "bundle.toml").write_text(manifest, encoding="utf-8")
        (root / "main.rule").write_text(b.body, encoding="utf-8")
        result = build_bundle(root)
        assert {d.code for d in result.diagnostics} == {want}, (b.line, result.diagnostics)


def test_dsl_md_cases_pass_against_its_bundle(tmp_path: Path) -> None:
    result = build_bundle(_doc_bundle(tmp_path))
    assert result.ruleset is not None
    case_blocks = [b for b in dsl_blocks() if b.kind == ("toml", "case")]
    assert case_blocks, "dsl.md shows no case file"
    paths = []
    for b in case_blocks:
        path = tmp_path / f"case{b.line}.toml"
        path.write_text(b.body, encoding="utf-8")
        paths.append(path)
    cases, diags = load_cases(paths)
    assert diags == []
    assert len(cases) >= 4
    failures = {c.name: run_case(result.ruleset, c).failures for c in cases}
    assert failures == {c.name: () for c in cases}


def test_dsl_md_json_outcome_matches_a_real_evaluation(tmp_path: Path) -> None:
    # The ```json outcome block is the outcome of the first case of the first case file.
    result = build_bundle(_doc_bundle(tmp_path))
    assert result.ruleset is not None
    case_block = next(b for b in dsl_blocks() if b.kind == ("toml", "case"))
    path = tmp_path / "first.toml"
    path.write_text(case_block.body, encoding="utf-8")
    case = load_cases([path])[0][0]
    snapshot, problems = result.ruleset.schema.validate(case.features)
    assert problems == []
    outcome = result.ruleset.evaluate(snapshot)
    shown = next(b for b in dsl_blocks() if b.kind == ("json", "outcome"))
    assert json.loads(shown.body) == json.loads(msgspec.json.encode(outcome))


def test_dsl_md_console_commands_are_valid_s3_commands() -> None:
    consoles = [b for b in dsl_blocks() if b.kind == ("console",)]
    commands = [
        line[2:] for b in consoles for line in b.body.splitlines() if line.startswith("$ s3 ")
    ]
    assert {shlex.split(c)[2] for c in commands} >= {"lint", "fmt", "explain", "test"}
    parser = build_parser()
    for c in commands:
        parser.parse_args(shlex.split(c)[1:])


def test_dsl_md_function_table_matches_the_whitelist() -> None:
    table = _section(dsl_doc(), "Functions")
    documented = set(re.findall(r"^\| `([a-z_0-9]+)\(", table, re.M))
    assert documented == set(FUNCTIONS) == set(FUNCTION_NAMES)


def test_dsl_md_reserved_words_match_the_code() -> None:
    section = _section(dsl_doc(), "Reserved words")
    paragraphs = [
        set(re.findall(r"`([a-z_0-9]+)`", para))
        for para in section.split("\n\n")
        if para.strip()
        and all(re.fullmatch(r"(`[a-z_0-9]+` ?)+", line.strip()) for line in para.splitlines())
    ]
    assert paragraphs == [set(KEYWORDS), (RESERVED_WORDS | FUNCTION_NAMES) - KEYWORDS]


def test_dsl_md_limits_table_matches_the_constants() -> None:
    table = _section(dsl_doc(), "Limits")
    rows = re.findall(r"^\| [^|]+ \| `([\w.]+)` \| ([\d_,. ]+(?:[KM]iB)?) \|", table, re.M)
    assert len(rows) >= 8
    for dotted, shown in rows:
        module, _, name = dotted.rpartition(".")
        value = getattr(importlib.import_module(module), name)
        if shown.strip().endswith("MiB"):
            assert value == int(shown.split()[0]) * 1024 * 1024, dotted
        elif shown.strip().endswith("KiB"):
            assert value == int(shown.split()[0]) * 1024, dotted
        else:
            assert value == int(shown.replace(" ", "").replace(",", "")), dotted


def test_dsl_md_outcome_table_lists_every_field() -> None:
    table = _section(dsl_doc(), "What an evaluation returns")
    documented = set(re.findall(r"^\| `(\w+)`", table, re.M))
    assert documented == set(Outcome.__struct_fields__) | {"size_mult", "tp_mult", "sl_mult"}


# -- links between the documents ---------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    without_code = FENCE.sub("", text)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", without_code, re.M)}


@pytest.mark.parametrize("doc", [DIAGNOSTICS_MD, DSL_MD], ids=lambda p: p.name)
def test_links_between_the_documents_point_at_real_headings(doc: Path) -> None:
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))
    links = re.findall(r"\]\(([a-z]+\.md)?#([^)]+)\)", text)
    assert links, f"{doc.name} links to no heading"
    for target, anchor in links:
        path = doc.parent / target if target else doc
        assert anchor in anchors(path.read_text(encoding="utf-8")), (doc.name, target, anchor)
