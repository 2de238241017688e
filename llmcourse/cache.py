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
