"""Hot reload by read-copy-update (spec §10, Part B7).

A `Registry` holds the bundle snapshot in force; a decision reads `registry.current` once and
uses that snapshot throughout, so it never sees two revisions. The `Reloader` fetches a new
revision from its source, verifies the checksum, compiles and lints it off to the side, and only
then swaps the reference in one assignment. A bundle that fails any step is rejected: the old one
keeps serving and a CONFIG_REJECTED event says why. The last good bundle is kept on local disk, so
a restart while the store is down still serves.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dsl.bundle import MANIFEST
from s3.config.bundle import checksum_files, load_dir, read_bundle_files, write_bundle_files
from s3.config.settings import Settings
from s3.core.decide import BundleSnapshot


@dataclass(frozen=True)
class ActivePointer:
    bundle_id: str
    rev: int
    checksum: str


@dataclass(frozen=True)
class BundleDoc:
    bundle_id: str
    rev: int
    checksum: str
    files: dict[str, str]


class MalformedBundle(ValueError):
    """A source's bundle document that is no bundle (e.g. ``files`` not an object of path ->
    text): rejected like any other bad bundle, not taken for the source being unavailable."""


class BundleSource(Protocol):
    """Where bundles come from: a directory, or the store's config_active + config_bundles.
    A source may also offer ``revisions(bundle_id) -> list[int]`` (the stored revisions): a
    start whose active revision is broken then falls back to the newest one that verifies."""

    def active(self) -> ActivePointer | None: ...

    def fetch(self, bundle_id: str, rev: int) -> BundleDoc | None:
        """The document, None if there is none; `MalformedBundle` if it is not a bundle."""
        ...


def check_files(files: Any, where: str) -> dict[str, str]:
    """``files`` as a dict of relative path -> text, or `MalformedBundle` saying what it is."""
    if not isinstance(files, dict):
        raise MalformedBundle(
            f"{where}: 'files' must be an object of path -> text, found {type(files).__name__}"
        )
    for path, text in files.items():
        if not isinstance(path, str) or not isinstance(text, str):
            raise MalformedBundle(
                f"{where}: 'files' must map path text to file text, found "
                f"{type(path).__name__} -> {type(text).__name__}"
            )
    return files


class DirectorySource:
    """A bundle directory (the embedded default): its manifest names the id and the rev."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _doc(self) -> BundleDoc:
        import tomllib

        files = read_bundle_files(self.root)
        manifest = tomllib.loads(files.get(MANIFEST, ""))
        return BundleDoc(
            str(manifest.get("bundle_id", "")),
            int(manifest.get("rev", -1)),
            checksum_files(files),
            files,
        )

    def active(self) -> ActivePointer | None:
        doc = self._doc()
        return ActivePointer(doc.bundle_id, doc.rev, doc.checksum)

    def fetch(self, bundle_id: str, rev: int) -> BundleDoc | None:
        doc = self._doc()
        return doc if (doc.bundle_id, doc.rev) == (bundle_id, rev) else None


class Registry:
    """The snapshot in force. Reading `current` is one attribute load; swapping is one store."""

    def __init__(self, snapshot: BundleSnapshot):
        self._current = snapshot
        self.applied_at = time.monotonic()

    @property
    def current(self) -> BundleSnapshot:
        return self._current

    def swap(self, snapshot: BundleSnapshot) -> BundleSnapshot:
        old, self._current = self._current, snapshot
        self.applied_at = time.monotonic()
        return old


@dataclass
class ReloadResult:
    status: str  # "applied" | "unchanged" | "rejected" | "unavailable"
    rev: int | None = None
    bundle_id: str | None = None
    reasons: list[str] = field(default_factory=list)
    took_ms: float = 0.0


EventSink = Callable[[str, dict[str, Any]], None]
"""Called with (kind, detail): CONFIG_APPLIED or CONFIG_REJECTED, for the strategy_events store."""


def _rendered(result: Any) -> list[str]:
    return [d.render() for d in result.diagnostics if d.is_error]


def compile_doc(
    doc: BundleDoc, settings: Settings | None = None
) -> tuple[BundleSnapshot | None, list[str]]:
    """Verify and compile a bundle document off to the side (a temporary directory)."""
    try:
        check_files(doc.files, f"bundle {doc.bundle_id} rev {doc.rev}")
    except MalformedBundle as exc:
        return None, [str(exc)]
    actual = checksum_files(doc.files)
    if actual != doc.checksum:
        return None, [
            f"checksum mismatch: the document says {doc.checksum[:12]}…, its files hash to {actual[:12]}…"
        ]
    tmp = Path(tempfile.mkdtemp(prefix="s3-bundle-"))
    try:
        try:
            write_bundle_files(tmp, doc.files)
        except (ValueError, OSError) as exc:
            return None, [f"cannot materialise the bundle: {exc}"]
        result = load_dir(tmp, settings)
        if result.snapshot is None:
            return None, _rendered(result) or ["the bundle did not compile"]
        snap = result.snapshot
        if (snap.bundle_id, snap.rev) != (doc.bundle_id, doc.rev):
            return None, [
                f"the manifest says {snap.bundle_id} rev {snap.rev}, the pointer {doc.bundle_id} rev {doc.rev}"
            ]
        return snap, []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Reloader:
    """Fetch → verify → compile → swap, with a local last-good copy and events for the store."""

    def __init__(
        self,
        registry: Registry | None,
        source: BundleSource,
        *,
        cache_dir: Path | None = None,
        on_event: EventSink | None = None,
        on_applied: Callable[[BundleSnapshot], None] | None = None,
        settings: Settings | None = None,
        build: Callable[[BundleDoc, Settings | None], tuple[BundleSnapshot | None, list[str]]]
        | None = None,
    ):
        self.registry = registry
        self.source = source
        self.cache_dir = cache_dir
        self.on_event = on_event or (lambda kind, detail: None)
        self.on_applied = on_applied or (lambda snap: None)
        self.settings = settings
        self.build = build
        """How a revision is built while another one serves (`s3.config.offpath`); default
        `compile_doc` here. Startup, with nothing serving yet, always builds in process."""
        self._lock = threading.Lock()  # one reload at a time; decisions never wait on it
        self.last_rejected: tuple[str, int] | None = None
        self.fallback: str | None = None
        """Why the revision served is not the active one, when a start had to fall back (the
        active revision rejected); cleared once the active revision is served."""

    # -- the last good bundle on local disk --------------------------------------------------------
    def _save_last_good(self, doc: BundleDoc) -> None:
        if self.cache_dir is None:
            return
        target = self.cache_dir / "last-good"
        staging = self.cache_dir / f".staging-{doc.bundle_id}-{doc.rev}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        write_bundle_files(staging / "bundle", doc.files)
        (staging / "pointer.json").write_text(
            json.dumps({"bundle_id": doc.bundle_id, "rev": doc.rev, "checksum": doc.checksum})
        )
        old = self.cache_dir / ".old"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)  # the new copy is complete before it becomes the last good one
        shutil.rmtree(old, ignore_errors=True)

    def load_last_good(self) -> BundleSnapshot | None:
        if self.cache_dir is None or not (self.cache_dir / "last-good" / "pointer.json").is_file():
            return None
        base = self.cache_dir / "last-good"
        pointer = json.loads((base / "pointer.json").read_text())
        doc = BundleDoc(
            pointer["bundle_id"],
            pointer["rev"],
            pointer["checksum"],
            read_bundle_files(base / "bundle"),
        )
        snap, _ = compile_doc(doc, self.settings)
        return snap

    # -- one reload ------------------------------------------------------------------------------------
    def check_once(self, reason: str = "poll") -> ReloadResult:
        started = time.perf_counter()
        with self._lock:
            result = self._check(reason)
        result.took_ms = (time.perf_counter() - started) * 1000
        return result

    def _check(self, reason: str) -> ReloadResult:
        try:
            pointer = self.source.active()
        except Exception as exc:  # the store is down: keep serving what we have
            return ReloadResult("unavailable", reasons=[f"cannot read the active pointer: {exc}"])
        if pointer is None:
            return ReloadResult("unavailable", reasons=["no active bundle"])
        current = self.registry.current if self.registry else None
        if current is not None and (current.bundle_id, current.rev, current.checksum) == (
            pointer.bundle_id,
            pointer.rev,
            pointer.checksum,
        ):
            self.fallback = None  # e.g. rolled back to the revision a fallback serves
            return ReloadResult("unchanged", pointer.rev, pointer.bundle_id)
        if self.last_rejected == (pointer.bundle_id, pointer.rev) and reason == "poll":
            return ReloadResult("rejected", pointer.rev, pointer.bundle_id, ["already rejected"])
        malformed = None
        try:
            doc = self.source.fetch(pointer.bundle_id, pointer.rev)
        except MalformedBundle as exc:  # the store answered: what it holds is no bundle
            doc, malformed = None, str(exc)
        except Exception as exc:
            return ReloadResult(
                "unavailable", pointer.rev, pointer.bundle_id, [f"cannot fetch the bundle: {exc}"]
            )
        reasons: list[str]
        if malformed is not None:
            snap, reasons = None, [malformed]
        elif doc is None:
            snap, reasons = (
                None,
                [f"bundle {pointer.bundle_id} rev {pointer.rev} is not in the source"],
            )
        elif doc.checksum != pointer.checksum:
            snap, reasons = (
                None,
                [
                    f"the active pointer's checksum {pointer.checksum[:12]}… does not match "
                    f"the bundle's {doc.checksum[:12]}…"
                ],
            )
        elif self.build is not None and current is not None:
            snap, reasons = self.build(doc, self.settings)
        else:
            snap, reasons = compile_doc(doc, self.settings)
        if snap is None or doc is None:
            self.last_rejected = (pointer.bundle_id, pointer.rev)
            self.on_event(
                "CONFIG_REJECTED",
                {
                    "bundle_id": pointer.bundle_id,
                    "rev": pointer.rev,
                    "reason": reason,
                    "errors": reasons[:20],
                    "serving_rev": current.rev if current else None,
                },
            )
            return ReloadResult("rejected", pointer.rev, pointer.bundle_id, reasons)
        if self.registry is None:
            self.registry = Registry(snap)
            old_rev = None
        else:
            old_rev = self.registry.swap(snap).rev
        self.last_rejected = None
        self.fallback = None
        try:
            self._save_last_good(doc)
        except OSError as exc:  # serving goes on; the next restart just has an older copy
            reasons.append(f"could not keep a local copy: {exc}")
        self.on_applied(snap)
        self.on_event(
            "CONFIG_APPLIED",
            {
                "bundle_id": snap.bundle_id,
                "rev": snap.rev,
                "previous_rev": old_rev,
                "checksum": snap.checksum,
                "reason": reason,
            },
        )
        return ReloadResult("applied", snap.rev, snap.bundle_id, reasons)

    def start_registry(self) -> Registry:
        """The first snapshot: from the source; if its active revision is rejected (or the
        source is down), the last good local copy; failing that, the newest revision in the
        source below the active one that verifies. A fallback is reported (`fallback`, and a
        CONFIG_APPLIED event saying why) until the active revision is served."""
        result = self.check_once("startup")
        if self.registry is not None:
            return self.registry
        snap = self.load_last_good()
        how = "last good local copy"
        if snap is None and result.status == "rejected" and result.rev is not None:
            assert result.bundle_id is not None
            found = self._newest_verified(result.bundle_id, result.rev)
            if found is not None:
                snap, doc = found
                how = "newest revision in the store that verifies"
                with contextlib.suppress(OSError):  # serving goes on without a local copy
                    self._save_last_good(doc)
        if snap is None:
            raise RuntimeError("no bundle to serve: " + "; ".join(result.reasons))
        self.registry = Registry(snap)
        detail: dict[str, Any] = {
            "bundle_id": snap.bundle_id,
            "rev": snap.rev,
            "previous_rev": None,
            "checksum": snap.checksum,
            "reason": how,
        }
        if result.status == "rejected":
            first = result.reasons[0] if result.reasons else "rejected"
            self.fallback = (
                f"serving {snap.bundle_id} rev {snap.rev} ({how}): the active revision "
                f"{result.bundle_id} rev {result.rev} was rejected: {first}"
            )[:1000]
            detail.update(
                fallback_from_rev=result.rev, errors=result.reasons[:20], why=self.fallback
            )
        self.on_event("CONFIG_APPLIED", detail)
        return self.registry

    MAX_FALLBACK_TRIES = 20
    """Revisions a start tries, newest first, before giving up on a fallback."""

    def _newest_verified(
        self, bundle_id: str, below_rev: int
    ) -> tuple[BundleSnapshot, BundleDoc] | None:
        revisions = getattr(self.source, "revisions", None)
        if revisions is None:
            return None
        try:
            revs = sorted(
                (int(r) for r in revisions(bundle_id) if int(r) < below_rev), reverse=True
            )
        except Exception:
            return None
        for rev in revs[: self.MAX_FALLBACK_TRIES]:
            try:
                doc = self.source.fetch(bundle_id, rev)
            except Exception:
                continue
            if doc is None:
                continue
            snap, _ = compile_doc(doc, self.settings)
            if snap is not None:
                return snap, doc
        return None
