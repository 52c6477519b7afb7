"""A bundle directory taken all the way to a `BundleSnapshot`: the DSL's build (rules, schema,
clamps, params) plus the engine sections, with one list of diagnostics for both."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from dsl import Diagnostic, build_bundle
from dsl.bundle import (
    MANIFEST,
    MAX_BUNDLE_BYTES,
    MAX_BUNDLE_ENTRIES,
    Manifest,
    key_span,
    rule_files,
)
from dsl.errors import sort_and_cap
from dsl.source import show_size
from s3.config.engine import ENGINE_SECTIONS, engine_params
from s3.config.settings import Settings
from s3.core.decide import BundleSnapshot
from s3.core.params import ModelSpec


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


BINARY_SUFFIXES = (".onnx",)
"""Bundle files kept as base64 text in the store and the checksum (model files)."""


def model_files(root: Path) -> list[Path]:
    """The bundle's model files (``*.onnx`` anywhere under the root), in path order."""
    return sorted(
        (p for p in root.rglob("*.onnx") if p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )


def read_bundle_files(root: str | Path) -> dict[str, str]:
    """The files that make a bundle (bundle.toml, the rule files and the model files), by
    relative path; a model file's bytes as base64 text, so the store and the checksum carry it
    like any other file."""
    base = Path(root)
    paths = [base / MANIFEST, *rule_files(base)]
    files = {
        p.relative_to(base).as_posix(): p.read_text(encoding="utf-8") for p in paths if p.is_file()
    }
    for p in model_files(base):
        files[p.relative_to(base).as_posix()] = base64.b64encode(p.read_bytes()).decode("ascii")
    return files


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
        if rel.endswith(BINARY_SUFFIXES):
            try:
                data = base64.b64decode(text.encode("ascii"), validate=True)
            except (ValueError, UnicodeEncodeError) as exc:
                raise ValueError(f"bundle file {rel!r} is not base64: {exc}") from None
            target.write_bytes(data)
        else:
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
    runtime = None
    if params is not None and params.model.kind == "onnx" and result.manifest is not None:
        runtime, model_spec, more = load_model_file(Path(path), result.manifest, params.model)
        diags.extend(more)
        params = msgspec.structs.replace(params, model=model_spec)
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
        runtime,
    )
    return LoadResult(snap, tuple(diags), result.texts)


def load_model_file(
    root: Path, manifest: Manifest, spec: ModelSpec
) -> tuple[Any, ModelSpec, list[Diagnostic]]:
    """The ONNX model named by ``[model] file``, built and verified against the bundle's
    features: (the model, the spec with its default id, diagnostics). Each problem is an E314
    at the manifest key it concerns, naming what the file has and what the bundle declares."""
    from s3.adapters.onnx_model import OnnxUnavailable, load_onnx

    assert spec.file is not None
    path, text = manifest.path, manifest.text

    def diag(key: str, message: str, hint: str | None = None) -> Diagnostic:
        return Diagnostic(
            "E314", f"model.{key}: {message}", key_span(path, text, ("model", key)), hint
        )

    target = root / spec.file
    if not target.is_file():
        found = [p.relative_to(root).as_posix() for p in model_files(root)]
        return (
            None,
            spec,
            [
                diag(
                    "file",
                    f"'{spec.file}' is not in the bundle",
                    f"model files in the bundle: {', '.join(found)}"
                    if found
                    else "put the .onnx file in the bundle directory",
                )
            ],
        )
    data = target.read_bytes()
    types = {n: f.type for n, f in manifest.schema.features.items()}
    try:
        model, problems = load_onnx(data, spec, types, name=spec.file)
    except OnnxUnavailable as exc:
        return None, spec, [diag("kind", str(exc))]
    if model is None:
        return None, spec, [diag(p.key, p.message, p.hint) for p in problems]
    if spec.model_id is None:
        spec = msgspec.structs.replace(spec, model_id=f"onnx:{model.sha256[:12]}")
    return model, spec, []
