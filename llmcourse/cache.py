"""The user cache: where fetched models and data live (``LLMCOURSE_CACHE_DIR`` overrides it)."""

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import platformdirs

CACHE_ENV = "LLMCOURSE_CACHE_DIR"
MANIFEST = "manifest.json"


def cache_dir(*parts: str) -> Path:
    """The course's cache folder (or a sub-folder of it), created on demand."""
    root = os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("llmcourse")
    path = Path(root).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, source: str) -> None:
    """Record every file's size and hash; written last, so its presence marks a complete copy."""
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"source": source, "files": files}, indent=1))
    os.replace(tmp, folder / MANIFEST)


def verify_manifest(folder: Path) -> str | None:
    """None when ``folder`` matches its manifest, else a sentence saying what is wrong."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{folder} has no {MANIFEST} (an interrupted download or conversion)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as err:
        return f"{manifest} is unreadable ({err})"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != want["size"]:
            return f"{path} has {path.stat().st_size} bytes, expected {want['size']} (truncated or corrupt)"
        if sha256_of(path) != want["sha256"]:
            return f"{path} does not match its recorded SHA-256 (corrupt)"
    return None


def atomic_folder(final: Path):
    """A fresh temporary folder beside ``final``; call ``commit(tmp)`` to move it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=final.name + ".partial-", dir=final.parent))


def commit_folder(tmp: Path, final: Path) -> Path:
    """Replace ``final`` by ``tmp`` (a rename, so readers never see half a folder)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


class CacheError(RuntimeError):
    """A cached copy that is still broken after being rebuilt."""


def ensured_folder(final: Path, build: Callable[[Path], object], what: str) -> Path:
    """``final`` when it matches its manifest; else built by ``build(final)`` (once) and verified.

    ``build`` must write the folder atomically with a manifest (``atomic_folder``, ``write_manifest``,
    ``commit_folder``); a partial or corrupt copy is rebuilt, a second failure is a ``CacheError``.
    """
    problem = verify_manifest(final) if final.exists() else None
    if final.exists() and problem is None:
        return final
    if problem:
        print(f"{what}: the cached copy is broken ({problem}); rebuilding it.", file=sys.stderr)
    build(final)
    if (problem := verify_manifest(final)) is not None:
        raise CacheError(f"{what}: rebuilt {final} but it is still broken: {problem}. "
                         f"Delete {final} and try again; if it persists, check free disk space.")
    return final


RETRAIN_ENV = "LLMCOURSE_RETRAIN"


def retrain_requested() -> bool:
    """True when ``LLMCOURSE_RETRAIN`` is set to a true value (``make course`` and the benchmarks set it)."""
    return os.environ.get(RETRAIN_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def cached_run(name: str, config: dict, compute: Callable[[], dict], retrain: bool | None = None) -> dict:
    """The result of ``compute()`` (a dict of tensors, numbers, strings and lists), cached in the user cache
    under ``name`` and the hash of ``config``, so re-running a lesson does not retrain.

    ``retrain=True`` (or ``LLMCOURSE_RETRAIN=1`` when ``retrain`` is None) computes again and replaces the
    cached copy. A cached file that cannot be read is recomputed, with a note. Writes are atomic.
    """
    import torch

    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir("runs") / f"{name}-{key}.pt"
    retrain = retrain_requested() if retrain is None else retrain
    if path.is_file() and not retrain:
        try:
            result = torch.load(path, weights_only=True)
            print(f"{name}: loaded the cached run ({path}); set {RETRAIN_ENV}=1 or retrain=True to train again.")
            return result
        except Exception as err:  # a truncated or foreign file: compute it again
            print(f"{name}: the cached run {path} is unreadable ({type(err).__name__}); computing it again.",
                  file=sys.stderr)
    result = compute()
    tmp = path.with_name(path.name + ".partial")
    torch.save(result, tmp)
    os.replace(tmp, path)
    return result
