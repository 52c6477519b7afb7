"""A bundle directory taken all the way to a `BundleSnapshot`: the DSL's build (rules, schema,
clamps, params) plus the engine sections, with one list of diagnostics for both."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dsl import Diagnostic, build_bundle
from dsl.bundle import MANIFEST, rule_files
from dsl.errors import sort_and_cap
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


def checksum_dir(root: Path) -> str:
    """sha256 over the bundle's canonical content: bundle.toml and the rule files, by relative path."""
    h = hashlib.sha256()
    for p in [root / MANIFEST, *rule_files(root)]:
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


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
