"""A bundle directory taken all the way to a `BundleSnapshot`: the DSL's build (rules, schema,
clamps, params) plus the engine sections, with one list of diagnostics for both."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dsl import Diagnostic, build_bundle
from dsl.bundle import MANIFEST, MAX_BUNDLE_BYTES, MAX_BUNDLE_ENTRIES, rule_files
from dsl.errors import sort_and_cap
from dsl.source import show_size
from s3.config.engine import ENGINE_SECTIONS, engine_params
from s3.config.settings import Settings
from s3.core.decide import BundleSnapshot


@dataclass(frozen=True)
class LoadResult:
    snapshot: BundleSnapshot | None
    diagnostics: tuple[Diagnostic, ...]
    texts: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.snapshot is not None


def checksum_files(files: Mapping[str, str]) -> str:
    """sha256 over the canonical content: each file's relative path and text, in path order."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path].encode("utf-8") + b"\0")
    return h.hexdigest()


def read_bundle_files(root: str | Path) -> dict[str, str]:
    """The files that make a bundle (bundle.toml and the rule files), by relative path."""
    base = Path(root)
    paths = [base / MANIFEST, *rule_files(base)]
    return {
        p.relative_to(base).as_posix(): p.read_text(encoding="utf-8") for p in paths if p.is_file()
    }


def write_bundle_files(root: Path, files: Mapping[str, str]) -> None:
    """Materialise a bundle's files; the caps of `dsl.bundle` are checked before anything is
    written (a store document is as untrusted as a directory), the rest when it is loaded."""
    total = sum(len(text.encode("utf-8")) for text in files.values())
    if len(files) > MAX_BUNDLE_ENTRIES:
        raise ValueError(
            f"the bundle holds {len(files)} files, more than the {MAX_BUNDLE_ENTRIES} "
            "a bundle may hold (E310)"
        )
    if total > MAX_BUNDLE_BYTES:
        raise ValueError(
            f"the bundle holds {total} bytes, more than the {show_size(MAX_BUNDLE_BYTES)} "
            "a bundle may hold (E310)"
        )
    for rel, text in files.items():
        target = (root / rel).resolve()
        if root.resolve() not in target.parents:
            raise ValueError(f"bundle file path escapes the bundle: {rel!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def checksum_dir(root: Path) -> str:
    """The checksum of a bundle directory (the same as of its files in the store)."""
    return checksum_files(read_bundle_files(root))


def load_dir(path: str | Path, settings: Settings | None = None) -> LoadResult:
    """Build a bundle directory into a snapshot, or every reason why not."""
    result = build_bundle(path, known_sections=ENGINE_SECTIONS)
    diags = list(result.diagnostics)
    params = None
    if result.manifest is not None:
        params, more = engine_params(result.manifest, settings)
        diags.extend(more)
    diags = sort_and_cap(diags)
    if result.ruleset is None or params is None or any(d.is_error for d in diags):
        return LoadResult(None, tuple(diags), result.texts)
    assert result.manifest is not None
    snap = BundleSnapshot(
        result.manifest.bundle_id,
        result.manifest.rev,
        result.ruleset,
        params,
        checksum_dir(Path(path)),
    )
    return LoadResult(snap, tuple(diags), result.texts)
