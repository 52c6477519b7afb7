"""A bundle directory: `bundle.toml` (id, rev, feature schema, clamps, params) plus `*.rule` files.

Validation of the manifest uses pydantic so that a bad field is reported with its path; every
problem becomes an E3xx diagnostic pointing into `bundle.toml`. Everything a bundle carries is
untrusted text: the directory is walked without following links (a symbolic link is E313), a
name with a control or non-printable character is refused (E312), and the bundle is capped in
entries, bytes per file, total bytes and rules (E107, E310) before any stage can take long.
Imports nothing outside `dsl`.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dsl.checker import check
from dsl.compiler import CompiledRuleset, compile_ruleset
from dsl.errors import Diagnostic, DslError, DslSyntaxError, Severity, sort_and_cap
from dsl.guard import bad_char, escaped
from dsl.nodes import Module, Rule
from dsl.parser import parse
from dsl.schema import (
    MAX_HISTORY,
    Bounds,
    Clamp,
    FeatureSpec,
    ParamTable,
    Schema,
    history_key,
)
from dsl.source import MAX_SOURCE_BYTES, Source, Span, show_size
from dsl.suggest import did_you_mean
from dsl.units import CONVERSIONS, parse_unit

MANIFEST = "bundle.toml"
RESERVED_WORDS = frozenset(
    [
        "let",
        "rule",
        "when",
        "then",
        "priority",
        "and",
        "or",
        "not",
        "in",
        "true",
        "false",
        "skip_entry",
        "size_mult",
        "tp_mult",
        "sl_mult",
    ]
)
FUNCTION_NAMES = frozenset(
    [
        "abs",
        "min",
        "max",
        "clamp",
        "log",
        "sqrt",
        "between",
        "has",
        "prev",
        "count_true",
        "between_wrap",
        "hour_utc",
        "minute_of_day_utc",
        "weekday_utc",
        "crossed_above",
        "crossed_below",
        *CONVERSIONS,
    ]
)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""What each part of a rule file's path inside a bundle must be (E312)."""
MAX_BUNDLE_ENTRIES = 256
"""Most files and directories under a bundle directory, all kinds counted (E310)."""
MAX_BUNDLE_BYTES = 512 * 1024
"""Most bytes of `bundle.toml` and the rule files together (E310); one file: `MAX_SOURCE_BYTES`."""
MAX_RULES = 4000
"""Most rules in a bundle (E310)."""
MAX_PARAM_INT = 2**63 - 1
"""Largest integer param, in absolute value (TOML integers are 64-bit)."""

ParamScalar = int | float | bool | str
ParamValue = ParamScalar | list[ParamScalar]


class TableParamModel(BaseModel):
    """``name = { by = "symbol", values = { BTCUSDT = 0.1, ETHUSDT = 0.01 }, unit = "..." }``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    by: str
    values: dict[str, int | float]
    unit: str = ""

    @model_validator(mode="after")
    def _check(self) -> TableParamModel:
        if not self.values:
            raise ValueError("a param table needs at least one entry in 'values'")
        for key, x in self.values.items():
            if isinstance(x, bool):
                raise ValueError(f"param table entry {escaped(key)} must be a number")
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"param table entry {escaped(key)} must be finite, found {x}")
            if isinstance(x, int) and abs(x) > MAX_PARAM_INT:
                raise ValueError(f"param table entry {escaped(key)} is out of range")
        if self.unit:
            parse_unit(self.unit)
        return self


class UnitParamModel(BaseModel):
    """``name = { value = 1.5, unit = "bps" }``: a number (or a list of numbers) with its unit."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    value: int | float | list[int | float]
    unit: str

    @model_validator(mode="after")
    def _check(self) -> UnitParamModel:
        for x in self.value if isinstance(self.value, list) else [self.value]:
            if isinstance(x, bool):
                raise ValueError("a unit is only for numbers")
        parse_unit(self.unit)
        return self


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class BoundsModel(_Strict):
    min: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    max: Annotated[float, Field(gt=0, allow_inf_nan=False)]

    @model_validator(mode="after")
    def _ordered(self) -> BoundsModel:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class ClampModel(_Strict):
    size_mult: BoundsModel = BoundsModel(min=0.25, max=2.0)
    tp_mult: BoundsModel = BoundsModel(min=0.5, max=2.0)
    sl_mult: BoundsModel = BoundsModel(min=0.5, max=2.0)


class FeatureModel(_Strict):
    type: Literal["number", "int", "string", "bool", "enum"]
    optional: bool = False
    values: list[Annotated[str, Field(min_length=1)]] | None = None
    doc: str = ""
    unit: str = ""
    history: Annotated[int, Field(ge=0, le=MAX_HISTORY)] = 0

    @model_validator(mode="after")
    def _unit(self) -> FeatureModel:
        if self.history and self.type not in ("number", "int"):
            raise ValueError(f"history is only for number and int features, not {self.type}")
        if self.unit and self.type not in ("number", "int"):
            raise ValueError(f"a unit is only for number and int features, not {self.type}")
        if self.unit:
            parse_unit(self.unit)
        return self

    @model_validator(mode="after")
    def _enum_values(self) -> FeatureModel:
        if self.type == "enum" and not self.values:
            raise ValueError("an enum feature needs a non-empty 'values' list")
        if self.type != "enum" and self.values is not None:
            raise ValueError(f"'values' is only for enum features, not {self.type}")
        if self.values and len(set(self.values)) != len(self.values):
            raise ValueError("enum values must be distinct")
        for value in self.values or ():
            if bad_char(value) is not None:
                raise ValueError(
                    f"enum value {escaped(value)} has a control or non-printable character"
                )
        return self


class ManifestModel(BaseModel):
    """The part of `bundle.toml` the DSL reads. Other top-level tables belong to the engine."""

    model_config = ConfigDict(extra="allow", frozen=True)

    bundle_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    rev: Annotated[int, Field(ge=0, strict=True)]
    description: str = ""
    clamp: ClampModel = ClampModel()
    features: dict[str, FeatureModel]
    params: dict[str, TableParamModel | UnitParamModel | ParamValue] = {}

    @field_validator("features", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        # `mid = "number"` is shorthand for `mid = { type = "number" }`.
        if isinstance(v, dict):
            return {k: {"type": t} if isinstance(t, str) else t for k, t in v.items()}
        return v

    @field_validator("features")
    @classmethod
    def _feature_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            _check_name(name, "feature")
        if not v:
            raise ValueError("a bundle declares at least one feature")
        for name, spec in v.items():
            for lag in range(1, spec.history + 1):
                if history_key(name, lag) in v:
                    raise ValueError(
                        f"feature '{history_key(name, lag)}' is the key of '{name}' {lag} "
                        f"snapshot{'s' * (lag > 1)} back (history = {spec.history}): "
                        "drop it, prev() reads it"
                    )
        return v

    @field_validator("params")
    @classmethod
    def _param_values(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name, value in v.items():
            _check_name(name, "param")
            if isinstance(value, TableParamModel):
                continue
            if isinstance(value, UnitParamModel):
                value = value.value
            for x in value if isinstance(value, list) else [value]:
                if isinstance(x, float) and not math.isfinite(x):
                    raise ValueError(f"param {escaped(name)} must be finite, found {x}")
                if isinstance(x, int) and not isinstance(x, bool) and abs(x) > MAX_PARAM_INT:
                    raise ValueError(f"param {escaped(name)} is out of range for a 64-bit integer")
            if isinstance(value, list) and len({type(x) for x in value}) > 1:
                raise ValueError(f"param {escaped(name)} mixes types in its list")
        return v


def _check_name(name: str, kind: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{kind} name {escaped(name)} must be letters, digits and '_', starting with a letter"
        )
    if name in RESERVED_WORDS or name in FUNCTION_NAMES:
        raise ValueError(f"{kind} name '{name}' is a reserved word of the language")


@dataclass(frozen=True)
class Manifest:
    bundle_id: str
    rev: int
    description: str
    schema: Schema
    clamp: Clamp
    params: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    path: str = MANIFEST
    """Where the manifest is reported (the bundle directory's bundle.toml)."""
    text: str = ""
    param_units: dict[str, str] = field(default_factory=dict)
    """The declared unit of each number param that has one."""
    param_tables: dict[str, ParamTable] = field(default_factory=dict)
    """The params keyed by an enum feature."""


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle read from disk: its manifest, parsed modules and the sources behind them."""

    root: str
    manifest: Manifest | None
    modules: tuple[Module, ...]
    texts: dict[str, str]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.diagnostics)


def key_span(path: str, text: str, loc: tuple[Any, ...]) -> Span:
    """Best-effort position of a manifest key: the deepest key of ``loc`` that can be found,
    searched from the header of its top-level table (so `params.mid` is not found under
    `[features]`)."""
    keys = [str(k) for k in loc if isinstance(k, str)]
    start = 0
    if len(keys) > 1:
        header = re.search(rf"^[ \t]*\[{re.escape(keys[0])}[\].]", text, re.M)
        if header is not None:
            start = header.start()
    if len(keys) == 1:  # a top-level key: its own table header first
        header = re.search(rf"^[ \t]*\[+[ \t]*({re.escape(keys[0])})[ \t]*[\].]", text, re.M)
        if header is not None:
            at = header.start(1)
            line = text.count("\n", 0, at) + 1
            col = at - (text.rfind("\n", 0, at) + 1) + 1
            return Span(path, line, col, line, col + len(keys[0]))
    for key in reversed(keys):
        k = re.escape(key)
        found = re.compile(
            rf"^[ \t]*(?:\[+[^\]\n]*?\b({k})\b[^\]\n]*\]+|({k})[ \t]*=)", re.M
        ).search(text, start) or re.compile(rf"\b({k})\b").search(text, start)
        if found is not None:
            at = found.start(1) if found.group(1) is not None else found.start(2)
            line = text.count("\n", 0, at) + 1
            col = at - (text.rfind("\n", 0, at) + 1) + 1
            return Span(path, line, col, line, col + len(key))
    return Span(path, 1, 1, 1, 2)


def parse_manifest(
    path: str, text: str, *, known_sections: Iterable[str] = ()
) -> tuple[Manifest | None, list[Diagnostic]]:
    """Validate `bundle.toml` text. Unknown top-level keys are warnings unless ``known_sections`` has them."""
    try:
        raw = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer too long to convert
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc)).lower()
        return None, [
            Diagnostic("E302", f"invalid TOML: {msg}", Span(path, line, col, line, col + 1))
        ]
    try:
        model = ManifestModel.model_validate(raw)
    except ValidationError as exc:
        errors: list[Diagnostic] = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            where = ".".join(str(p) if not bad_char(str(p)) else escaped(str(p)) for p in loc)
            where = where or "(top level)"
            msg = err["msg"][0].lower() + err["msg"][1:]
            if msg.startswith("value error, "):
                msg = msg[len("value error, ") :]
            errors.append(Diagnostic("E303", f"{where}: {msg}", key_span(path, text, loc)))
        return None, errors
    diags: list[Diagnostic] = []
    known = {"bundle_id", "rev", "description", "clamp", "features", "params", *known_sections}
    for key in raw:
        if key not in known:
            diags.append(
                Diagnostic(
                    "W301",
                    f"unknown section '{key}' in {MANIFEST}",
                    key_span(path, text, (key,)),
                    did_you_mean(key, known),
                    Severity.WARNING,
                )
            )
    features: dict[str, FeatureSpec] = {}
    for name, fm in model.features.items():
        features[name] = FeatureSpec(
            name, fm.type, fm.optional, tuple(fm.values or ()), fm.doc, fm.unit, fm.history
        )
    params: dict[str, Any] = {}
    param_units: dict[str, str] = {}
    tables: dict[str, ParamTable] = {}
    for name, value in model.params.items():
        if isinstance(value, TableParamModel):
            tables[name] = ParamTable(value.by, tuple(value.values.items()), value.unit)
            diags.extend(_table_problems(name, tables[name], features, path, text))
        elif isinstance(value, UnitParamModel):
            params[name], param_units[name] = value.value, value.unit
        else:
            params[name] = value
    for name in model.params:
        if name in features:
            diags.append(
                Diagnostic(
                    "E305",
                    f"param '{name}' has the name of a feature",
                    key_span(path, text, ("params", name)),
                    "rename the param; rules could not tell the two apart",
                )
            )
    clamp = Clamp(
        *(
            Bounds(b.min, b.max)
            for b in (model.clamp.size_mult, model.clamp.tp_mult, model.clamp.sl_mult)
        )
    )
    extra = {
        k: v
        for k, v in raw.items()
        if k not in ("bundle_id", "rev", "description", "clamp", "features", "params")
    }
    manifest = Manifest(
        model.bundle_id,
        model.rev,
        model.description,
        Schema(features),
        clamp,
        params,
        extra,
        raw,
        path,
        text,
        param_units,
        tables,
    )
    return manifest, diags


def _table_problems(
    name: str, table: ParamTable, features: dict[str, FeatureSpec], path: str, text: str
) -> list[Diagnostic]:
    """E306 unless the table is keyed by an enum feature and has exactly one entry per value."""
    spec = features.get(table.by)
    where = key_span(path, text, ("params", name))
    if spec is None or spec.type != "enum":
        found = "not a declared feature" if spec is None else f"a {spec.type} feature"
        return [
            Diagnostic(
                "E306",
                f"param table '{name}' is keyed by '{table.by}', {found}; a table is keyed "
                "by an enum feature",
                where,
                did_you_mean(table.by, [f for f, s in features.items() if s.type == "enum"]),
            )
        ]
    keys = [k for k, _ in table.entries]
    missing = [v for v in spec.values if v not in keys]
    extra = [k for k in keys if k not in spec.values]
    out = []
    if missing:
        out.append(
            Diagnostic(
                "E306",
                f"param table '{name}' has no entry for {', '.join(map(repr, missing))} of "
                f"{table.by} (enum: {', '.join(spec.values)})",
                where,
                "every value of the enum needs its entry",
            )
        )
    if extra:
        out.append(
            Diagnostic(
                "E306",
                f"param table '{name}' has entries for {', '.join(map(repr, extra))}, not "
                f"values of {table.by} (enum: {', '.join(spec.values)})",
                where,
                did_you_mean(extra[0], spec.values) or "drop them, or add them to the enum",
            )
        )
    return out


@dataclass
class BundleScan:
    """What a walk of a bundle directory found, without following links or reading files."""

    rule_files: list[Path] = field(default_factory=list)
    """Regular ``*.rule`` files with safe names, in evaluation order (by relative path)."""
    sizes: dict[Path, int] = field(default_factory=dict)
    manifest: Path | None = None
    """``bundle.toml`` if it is a regular file (not a link)."""
    diagnostics: list[Diagnostic] = field(default_factory=list)
    over: bool = False
    """True when the walk stopped at `MAX_BUNDLE_ENTRIES` (nothing of the bundle is read)."""


def scan_bundle(root: Path, display_root: str | None = None) -> BundleScan:
    """Walk a bundle directory: symbolic links are E313, unsafe names E312, too many entries E310.

    A link is never followed (neither a linked file nor a linked directory is read). A name with
    a control or non-printable character is refused with its characters escaped, whatever the
    file is (it would otherwise reach diagnostics, logs and generated code), and each part of the
    path of a rule file must be letters, digits, '_', '-' and '.', starting with a letter or
    digit (no spaces, quotes, brackets or dunder names).
    """
    shown_root = display_root if display_root is not None else str(root).rstrip("/")
    scan = BundleScan()
    entries = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            scan.diagnostics.append(
                Diagnostic("E301", f"cannot read {escaped(str(folder))}: {exc.strerror}", None)
            )
            continue
        for entry in children:
            entries += 1
            if entries > MAX_BUNDLE_ENTRIES:
                scan.diagnostics.append(
                    Diagnostic(
                        "E310",
                        f"'{shown_root}' holds more than {MAX_BUNDLE_ENTRIES} files and "
                        "directories; a bundle is capped",
                        None,
                        "keep only bundle.toml, the rule files and cases/ in a bundle directory",
                    )
                )
                scan.over = True
                scan.rule_files = []
                return scan
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            shown = f"{shown_root}/{rel}"
            ch = bad_char(entry.name)
            if ch is not None:
                scan.diagnostics.append(
                    Diagnostic(
                        "E312",
                        f"file name {escaped(shown)} has a control or non-printable "
                        f"character ('{ch}')",
                        None,
                        "rename the file: names in a bundle are printable text",
                    )
                )
                continue
            if entry.is_symlink():
                scan.diagnostics.append(
                    Diagnostic(
                        "E313",
                        f"{escaped(shown)} is a symbolic link; a bundle holds regular files only",
                        None,
                        "copy the file into the bundle instead of linking to it",
                    )
                )
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(path)
            elif entry.is_file(follow_symlinks=False):
                if folder == root and entry.name == MANIFEST:
                    scan.manifest = path
                elif entry.name.endswith(".rule"):
                    if not all(_SAFE_PART.fullmatch(part) for part in rel.split("/")):
                        scan.diagnostics.append(
                            Diagnostic(
                                "E312",
                                f"rule file name {escaped(shown)} is not letters, digits, "
                                "'_', '-' and '.' starting with a letter or digit",
                                None,
                                "rename the file (and its directories), e.g. risk_limits.rule",
                            )
                        )
                        continue
                    scan.rule_files.append(path)
                else:
                    continue
                scan.sizes[path] = entry.stat(follow_symlinks=False).st_size
    scan.rule_files.sort(key=lambda p: p.relative_to(root).as_posix())
    return scan


def rule_files(root: Path) -> list[Path]:
    """The bundle's rule files in evaluation order: sorted by their path relative to the root
    (regular files with safe names only, see `scan_bundle`)."""
    return scan_bundle(root).rule_files


def read_text(path: Path, limit: int) -> str:
    """At most ``limit`` bytes of a file, decoded (bad bytes become U+FFFD, reported by the
    lexer); a link in the last component is refused by the OS (``O_NOFOLLOW``)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit).decode("utf-8", errors="replace")


def load_bundle(path: str | Path, *, known_sections: Iterable[str] = ()) -> LoadedBundle:
    """Read and parse a bundle directory, collecting every diagnostic instead of stopping at one.

    Args:
        path: the bundle directory (holding `bundle.toml` and `*.rule` files).
        known_sections: top-level manifest tables owned by the caller (no W301 for them).
    """
    root = Path(path)
    display_root = str(path).rstrip("/")
    diags: list[Diagnostic] = []
    texts: dict[str, str] = {}
    manifest_path = root / MANIFEST
    manifest: Manifest | None = None
    if not root.is_dir():
        return LoadedBundle(
            display_root,
            None,
            (),
            {},
            (Diagnostic("E301", f"bundle directory '{display_root}' not found", None),),
        )
    scan = scan_bundle(root, display_root)
    diags.extend(scan.diagnostics)
    if scan.over:
        return LoadedBundle(display_root, None, (), {}, tuple(diags))
    mpath = f"{display_root}/{MANIFEST}"
    files = [f for f in scan.rule_files if scan.sizes[f] <= MAX_SOURCE_BYTES]
    total = sum(scan.sizes[f] for f in files) + scan.sizes.get(manifest_path, 0)
    if total > MAX_BUNDLE_BYTES:
        diags.append(
            Diagnostic(
                "E310",
                f"'{display_root}' holds {total} bytes of bundle.toml and rule files, more "
                f"than the {show_size(MAX_BUNDLE_BYTES)} a bundle may hold",
                None,
                "split the rules into several bundles, or generate fewer rules",
            )
        )
        return LoadedBundle(display_root, None, (), {}, tuple(diags))
    if scan.manifest is None:
        if not manifest_path.is_symlink():  # a link is E313 already
            diags.append(
                Diagnostic(
                    "E301",
                    f"'{display_root}' has no {MANIFEST}",
                    None,
                    "a bundle directory holds bundle.toml and *.rule files",
                )
            )
    elif scan.sizes[scan.manifest] > MAX_SOURCE_BYTES:
        diags.append(
            Diagnostic(
                "E310",
                f"{MANIFEST} is larger than {show_size(MAX_SOURCE_BYTES)}",
                Span(mpath, 1, 1, 1, 2),
                "a manifest holds the schema, clamps and params: keep it small",
            )
        )
    else:
        text = read_text(scan.manifest, MAX_SOURCE_BYTES)
        texts[mpath] = text
        manifest, mdiags = parse_manifest(mpath, text, known_sections=known_sections)
        diags.extend(mdiags)
    if not scan.rule_files and not any(d.code in ("E312", "E313") for d in diags):
        diags.append(Diagnostic("E304", f"'{display_root}' has no *.rule files", None))
    modules = []
    rules = 0
    for f in scan.rule_files:
        display = f"{display_root}/{f.relative_to(root).as_posix()}"
        # An oversized file is read only as far as the parser needs to refuse it (E107).
        source = Source(display, read_text(f, MAX_SOURCE_BYTES + 1))
        texts[display] = source.text
        try:
            module = parse(source)
        except DslSyntaxError as exc:
            diags.extend(exc.diagnostics)
            if exc.partial is None:
                continue
            module = exc.partial
        modules.append(module)
        rules += sum(isinstance(i, Rule) for i in module.items)
        if rules > MAX_RULES:
            diags.append(
                Diagnostic(
                    "E310",
                    f"'{display_root}' holds more than {MAX_RULES} rules; a bundle is capped",
                    None,
                    "split the rules into several bundles, or generate fewer rules",
                )
            )
            return LoadedBundle(display_root, manifest, (), texts, tuple(diags))
    return LoadedBundle(display_root, manifest, tuple(modules), texts, tuple(diags))


@dataclass(frozen=True)
class BuildResult:
    """A bundle taken through every stage: the compiled ruleset, or why there is none."""

    ruleset: CompiledRuleset | None
    manifest: Manifest | None
    diagnostics: tuple[Diagnostic, ...]
    texts: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.ruleset is not None and not any(d.is_error for d in self.diagnostics)


def missing_units(manifest: Manifest) -> list[Diagnostic]:
    """W302 for every number feature and number param declared without a unit (`--strict`)."""
    out = []
    mpath, text = manifest.path, manifest.text
    for name, spec in manifest.schema.features.items():
        if spec.type in ("number", "int") and not spec.unit:
            out.append(
                Diagnostic(
                    "W302",
                    f"feature '{name}' has no unit, so its uses are not unit-checked",
                    key_span(mpath, text, ("features", name)),
                    'declare it, e.g. { type = "number", unit = "bps" }',
                    Severity.WARNING,
                )
            )
    for name in manifest.param_tables:
        if not manifest.param_tables[name].unit:
            out.append(
                Diagnostic(
                    "W302",
                    f"param table '{name}' has no unit, so its uses are not unit-checked",
                    key_span(mpath, text, ("params", name)),
                    'declare it: { by = ..., values = { ... }, unit = "bps" }',
                    Severity.WARNING,
                )
            )
    for name, value in manifest.params.items():
        items = value if isinstance(value, list) else [value]
        numeric = items and all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in items
        )
        if numeric and name not in manifest.param_units:
            out.append(
                Diagnostic(
                    "W302",
                    f"param '{name}' has no unit, so its uses are not unit-checked",
                    key_span(mpath, text, ("params", name)),
                    f'declare it, e.g. {name} = {{ value = {value!r}, unit = "bps" }}'
                    if not isinstance(value, list)
                    else 'declare it, e.g. { value = [...], unit = "bps" }',
                    Severity.WARNING,
                )
            )
    return out


def build_bundle(
    path: str | Path, *, known_sections: Iterable[str] = (), strict: bool = False
) -> BuildResult:
    """Load, check and compile a bundle directory, collecting every diagnostic on the way.

    Args:
        path: the bundle directory.
        known_sections: top-level manifest tables owned by the caller (no W301 for them).
        strict: also warn about number features and params without a unit (W302).
    """
    loaded = load_bundle(path, known_sections=known_sections)
    diags = list(loaded.diagnostics)
    manifest = loaded.manifest
    if manifest is not None and strict:
        diags.extend(missing_units(manifest))
    if manifest is None:
        # Without a schema every name is unknown; report syntax problems only.
        return BuildResult(None, None, tuple(sort_and_cap(diags)), loaded.texts)
    try:
        checked = check(
            loaded.modules,
            schema=manifest.schema,
            params=manifest.params,
            param_units=manifest.param_units,
            tables=manifest.param_tables,
            clamp=manifest.clamp,
            texts=loaded.texts,
        )
    except DslError as exc:
        found = list(exc.diagnostics)
        if loaded.has_errors:  # with items missing, "unused let" and the like would be noise
            found = [d for d in found if d.is_error]
        return BuildResult(None, manifest, tuple(sort_and_cap([*diags, *found])), loaded.texts)
    if not loaded.has_errors:
        diags.extend(checked.warnings)
    if any(d.is_error for d in diags):
        return BuildResult(None, manifest, tuple(sort_and_cap(diags)), loaded.texts)
    try:
        ruleset = compile_ruleset(checked, revision=manifest.rev, bundle_id=manifest.bundle_id)
    except DslError as exc:  # E311: the generated code was refused (a compiler bug)
        return BuildResult(
            None, manifest, tuple(sort_and_cap([*diags, *exc.diagnostics])), loaded.texts
        )
    return BuildResult(ruleset, manifest, tuple(sort_and_cap(diags)), loaded.texts)
