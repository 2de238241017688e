"""The user cache: where fetched models and data live (``LLMCOURSE_CACHE_DIR`` overrides it).

Loading from a complete cache writes nothing into it (a manifest that cannot be updated is checked again next
time), so one read-only cache can serve every learner of a class (``deploy/jupyterhub/``). What the lessons
compute and keep (``cached_run``) goes to ``runs/`` in the cache, or to ``LLMCOURSE_RUNS_DIR``, a learner's own
folder, which is read first, then the shared cache's ``runs/`` (an instructor's runs serve the whole class).
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import platformdirs

CACHE_ENV = "LLMCOURSE_CACHE_DIR"
RUNS_ENV = "LLMCOURSE_RUNS_DIR"
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


SETTLED_NS = 2_000_000_000  # a modification time this old cannot be shared by a later write (clock ticks are coarse)


def _settled_mtime(stat) -> int | None:
    """The file's modification time if it is old enough to vouch for the content (else None: hash next time)."""
    return stat.st_mtime_ns if time.time_ns() - stat.st_mtime_ns > SETTLED_NS else None


def write_manifest(folder: Path, source: str) -> None:
    """Record every file's size, hash and modification time; written last, so its presence marks a complete copy."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            stat = p.stat()
            files[str(p.relative_to(folder))] = {"size": stat.st_size, "sha256": sha256_of(p),
                                                 "mtime_ns": _settled_mtime(stat)}
    _write_json(folder / MANIFEST, {"source": source, "files": files})


def _write_json(path: Path, value) -> None:
    """Atomically, through a temporary file of this process's own (two processes may write at once)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def verify_manifest(folder: Path, full: bool = False) -> str | None:
    """None when ``folder`` matches its manifest, else a sentence saying what is wrong.

    Every file must be there with its recorded size. Its SHA-256 is computed again only when its modification
    time differs from the recorded one (any write changes it), or always with ``full=True`` (``llmcourse doctor
    --verify``): a model loads in a fraction of a second instead of hashing 0.5 GB each time. A file found
    intact after its time changed (a copied cache, a file written moments ago) gets its time recorded once
    that time is old enough that no later write can share it.
    """
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{folder} has no {MANIFEST} (an interrupted download or conversion)"
    try:
        record = json.loads(manifest.read_text())
        files = record["files"]
    except (ValueError, KeyError) as err:
        return f"{manifest} is unreadable ({err})"
    retimed = False
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        stat = path.stat()
        if stat.st_size != want["size"]:
            return f"{path} has {stat.st_size} bytes, expected {want['size']} (truncated or corrupt)"
        if full or stat.st_mtime_ns != want.get("mtime_ns"):
            if sha256_of(path) != want["sha256"]:
                return f"{path} does not match its recorded SHA-256 (corrupt)"
            settled = _settled_mtime(stat)
            retimed |= settled != want.get("mtime_ns")
            want["mtime_ns"] = settled
    if retimed:
        try:
            _write_json(manifest, record)
        except OSError:  # a read-only cache: it is verified again next time
            pass
    return None


def known_sha256(path: Path) -> str:
    """``sha256_of(path)``, remembered in the cache by the file's path, size and modification time, so a large
    file that does not change is hashed once (the GGUF that names SmolLM2's converted folder)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_path = cache_dir() / "sha256-memo.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if isinstance(memo.get(key), str):
        return memo[key]
    digest = sha256_of(path)
    if _settled_mtime(stat) is not None:
        memo = {k: v for k, v in memo.items() if not k.startswith(f"{path}|")}  # older versions of this file
        memo[key] = digest
        try:
            _write_json(memo_path, memo)
        except OSError:  # a read-only cache: hashed again next time
            pass
    return digest


def atomic_folder(final: Path):
    """A fresh temporary folder beside ``final``; call ``commit(tmp)`` to move it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=final.name + ".partial-", dir=final.parent))


def _open_like_parent(tmp: Path) -> None:
    """Give a built folder the permissions its parent has, as a plain ``mkdir`` would (``mkdtemp`` makes it
    0700, and some writers make 0600 files): a cache shared by a class must be readable by every learner."""
    mode = tmp.parent.stat().st_mode & 0o777
    for folder, _, files in os.walk(tmp):
        os.chmod(folder, mode)
        for name in files:
            path = os.path.join(folder, name)
            os.chmod(path, mode & 0o666 | os.stat(path).st_mode & mode & 0o111)


def commit_folder(tmp: Path, final: Path) -> Path:
    """Replace ``final`` by ``tmp`` (a rename, so readers never see half a folder), readable as its parent is."""
    _open_like_parent(tmp)
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


def runs_dir() -> Path:
    """Where ``cached_run`` writes: ``LLMCOURSE_RUNS_DIR`` when set (beside a shared, read-only cache), else
    ``runs/`` in the cache; created on demand."""
    if os.environ.get(RUNS_ENV):
        path = Path(os.environ[RUNS_ENV]).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return cache_dir("runs")


def cached_run(name: str, config: dict, compute: Callable[[], dict], retrain: bool | None = None) -> dict:
    """The result of ``compute()`` (a dict of tensors, numbers, strings and lists), cached in the user cache
    under ``name`` and the hash of ``config``, so re-running a lesson does not retrain.

    ``retrain=True`` (or ``LLMCOURSE_RETRAIN=1`` when ``retrain`` is None) computes again and replaces the
    cached copy. A cached file that cannot be read is recomputed, with a note. Writes are atomic, into
    ``runs_dir()``; with ``LLMCOURSE_RUNS_DIR`` set, a run found there or else in the cache's ``runs/`` is loaded.
    """
    import torch

    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = runs_dir() / f"{name}-{key}.pt"
    found = [path] + ([cache_dir() / "runs" / path.name] if os.environ.get(RUNS_ENV) else [])
    retrain = retrain_requested() if retrain is None else retrain
    for cached in (p for p in found if p.is_file() and not retrain):
        try:
            result = torch.load(cached, weights_only=True)
            print(f"{name}: loaded the cached run ({cached}); set {RETRAIN_ENV}=1 or retrain=True to train again.")
            return result
        except Exception as err:  # a truncated or foreign file: compute it again
            print(f"{name}: the cached run {cached} is unreadable ({type(err).__name__}); computing it again.",
                  file=sys.stderr)
    result = compute()
    tmp = path.with_name(path.name + ".partial")
    torch.save(result, tmp)
    os.replace(tmp, path)
    return result
