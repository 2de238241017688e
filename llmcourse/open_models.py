"""Lesson 10, open models: the shapes of OPT-175B and BLOOM-176B (and the models themselves, built on
PyTorch's meta device: shapes and dtypes without memory), perplexity on held-out Shakespeare, a model's
linear weights swapped for a transform of them (a quantization round trip), measured memory, KV cache and
tokens per second, absmax quantization done by PyTorch's own quantizers, the Q4_1 blocks of the shipped
GGUF, and the parallel texts and tokenizers of the fertility comparison.

Nothing here writes out the chapter's exercises: the KV cache is read from what a forward pass leaves
(``kv_cache``, forbidden in ``largest_batch``), absmax is PyTorch's observers and fake quantizers
(``absmax_scale`` and ``absmax_round_trip``, forbidden in ``absmax_quantize``), GGUF's blocks are read
back by the ``gguf`` package (``gguf_dequantized``), and no function counts tokens per word.
"""

import math
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- published shapes


@dataclass(frozen=True)
class ModelShape:
    """What the memory of a decoder depends on: parameters, and the shape of its KV cache."""

    name: str
    n_params: float
    n_layers: int
    n_kv_heads: int  # key/value heads per layer (= attention heads without grouped-query attention)
    head_dim: int
    context: int  # the context length it was trained with
    source: str


OPEN_MODELS = {
    "OPT-175B": ModelShape("OPT-175B", 175e9, 96, 96, 128, 2_048,
                           "Zhang et al. 2022, OPT, arXiv:2205.01068, Table 1"),
    "BLOOM-176B": ModelShape("BLOOM-176B", 176_247_271_424, 70, 112, 128, 2_048,
                             "BigScience 2022, BLOOM, arXiv:2211.05100, and its model card"),
    "SmolLM2-135M": ModelShape("SmolLM2-135M", 134_515_008, 30, 3, 64, 8_192,
                               "the shipped model's config.json (9 query heads share 3 key/value heads)"),
}

# The configurations the models were released with (Hugging Face's ``OPTConfig`` and ``BloomConfig``
# arguments): OPT-175B from Zhang et al. 2022, Table 1 (96 layers, 96 heads, width 12,288), with the OPT
# family's vocabulary of 50,272 and feed-forward width 4 x 12,288; BLOOM-176B from its config.json (70
# layers, 112 heads, width 14,336, vocabulary padded to 250,880).
PUBLISHED_CONFIGS = {
    "OPT-175B": ("OPTConfig", {"vocab_size": 50_272, "hidden_size": 12_288, "word_embed_proj_dim": 12_288,
                               "num_hidden_layers": 96, "num_attention_heads": 96, "ffn_dim": 49_152,
                               "max_position_embeddings": 2_048}),
    "BLOOM-176B": ("BloomConfig", {"vocab_size": 250_880, "hidden_size": 14_336, "n_layer": 70, "n_head": 112}),
}


def meta_model(name: str, dtype: torch.dtype = torch.float16):
    """``name`` (a key of ``PUBLISHED_CONFIGS``, or ``"SmolLM2-135M"``: the shipped model's own config) built
    by Hugging Face on PyTorch's meta device, in ``dtype``: every parameter has its shape and dtype but no
    memory, so ``get_memory_footprint()`` and the KV cache of a forward pass can be read for 175 B
    parameters on a laptop. Running it computes shapes, not numbers."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    if name == "SmolLM2-135M":
        from llmcourse.models import CAUSAL_LMS, DEFAULT_CAUSAL_LM, resolve

        config = AutoConfig.from_pretrained(resolve(None, CAUSAL_LMS, DEFAULT_CAUSAL_LM))
    else:
        config_class, arguments = PUBLISHED_CONFIGS[name]
        config = getattr(transformers, config_class)(**arguments)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


# ---------------------------------------------------------------- held-out text and perplexity

HELDOUT_FRACTION = 0.1  # the last 10 % of the corpus, the part the course's small models never train on


def heldout_shakespeare() -> str:
    """The last ``HELDOUT_FRACTION`` of ``llmcourse.data.text_corpus()``, from the start of a line."""
    from llmcourse.data import text_corpus

    text = text_corpus()
    start = text.index("\n", int(len(text) * (1 - HELDOUT_FRACTION))) + 1
    return text[start:]


def heldout_token_ids(tokenizer, n_tokens: int) -> torch.Tensor:
    """The first ``n_tokens`` token ids ``(n_tokens,)`` of the held-out text (a Hugging Face tokenizer)."""
    text = heldout_shakespeare()
    n_chars = 8 * n_tokens  # Shakespeare runs about 3-4 characters per token: tokenize a prefix only
    while True:
        ids = tokenizer(text[:n_chars], add_special_tokens=False)["input_ids"]
        if len(ids) > n_tokens or n_chars >= len(text):
            break
        n_chars *= 2
    if len(ids) < n_tokens:
        raise ValueError(f"the held-out text has only {len(ids):,} tokens; asked for {n_tokens:,}")
    return torch.tensor(ids[:n_tokens])


def causal_lm_perplexity(model, token_ids: torch.Tensor, window: int = 512, progress: bool = True) -> float:
    """exp(mean negative log-likelihood) of ``token_ids`` ``(N,)`` cut into windows of ``window`` tokens
    (the last partial window dropped); each window is read on its own, so its first token is not predicted."""
    from tqdm.auto import tqdm

    n_windows = len(token_ids) // window
    if n_windows == 0:
        raise ValueError(f"{len(token_ids)} tokens make no window of {window}")
    windows = token_ids[: n_windows * window].view(n_windows, window)  # (W, T)
    device = next(model.parameters()).device
    total_nll, n_predicted = 0.0, 0
    with torch.no_grad():
        for x in tqdm(windows, desc="perplexity", leave=False, disable=not progress):
            x = x[None].to(device)  # (1, T)
            logits = model(x).logits  # (1, T, V)
            nll = F.cross_entropy(logits[0, :-1].float(), x[0, 1:], reduction="sum")
            total_nll += nll.item()
            n_predicted += window - 1
    return math.exp(total_nll / n_predicted)


# ---------------------------------------------------------------- linear weights, swapped for a transform

def block_linear_layers(model) -> list[tuple[str, nn.Linear]]:
    """Every ``nn.Linear`` of the model except its output layer (which SmolLM2 ties to the token embedding)."""
    output = model.get_output_embeddings()
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and module is not output]


@contextmanager
def weights_replaced(model, transform):
    """Inside the block, each linear weight ``w`` of ``block_linear_layers`` is ``transform(w)`` (a tensor of
    the same shape); the original weights come back afterwards, even after an error."""
    layers = block_linear_layers(model)
    originals = [layer.weight.data for _, layer in layers]
    try:
        with torch.no_grad():
            for (name, layer), w in zip(layers, originals):
                new = transform(w.clone())
                if not isinstance(new, torch.Tensor) or new.shape != w.shape:
                    raise ValueError(f"the transform of {name}'s weight {tuple(w.shape)} returned "
                                     f"{getattr(new, 'shape', type(new).__name__)}")
                layer.weight.data = new.to(w.dtype)
        yield layers
    finally:
        for (_, layer), w in zip(layers, originals):
            layer.weight.data = w


# ---------------------------------------------------------------- measured memory and speed

def parameter_bytes(model) -> int:
    """Bytes of the model's parameters and buffers (a tied matrix counted once)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def resident_memory_mb() -> float:
    """This process's resident memory now, in MB (1e6 bytes)."""
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def _cache_pairs(cache) -> list:
    """One ``(keys, values)`` pair per layer of a Hugging Face KV cache, whatever the version's layout."""
    if hasattr(cache, "layers"):  # transformers 5: one DynamicLayer per layer
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):  # transformers 4.x DynamicCache
        return list(zip(cache.key_cache, cache.value_cache))
    return [tuple(pair) for pair in cache]  # the legacy tuple of (key, value) pairs


def cache_nbytes(cache) -> int:
    """Bytes of every key and value tensor in a Hugging Face KV cache (any version's layout)."""
    return sum(t.numel() * t.element_size() for pair in _cache_pairs(cache) for t in pair if t is not None)


def _cache_of(output):
    return output.cache if getattr(output, "cache", None) is not None else output.past_key_values


def kv_cache(model, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the prompt ``input_ids`` ``(B, T)`` once with ``use_cache=True``; the cache it leaves, as one
    ``(keys, values)`` pair per layer, each ``(B, key/value heads, T, head size)`` in the model's dtype (on the
    meta device for a ``meta_model``: shapes and ``nbytes``, no numbers)."""
    with torch.no_grad():
        cache = _cache_of(model(input_ids.to(next(model.parameters()).device), use_cache=True))
    return _cache_pairs(cache)


def generation_speed(model, input_ids: torch.Tensor, new_tokens: int) -> dict:
    """Greedy generation of ``new_tokens`` after the prompt ``input_ids`` ``(1, T)`` by ``model.generate`` (which
    reuses the KV cache), timed by a streamer that notes when the prompt goes in and each new token comes out.

    Returns the prompt's tokens per second (one forward pass over the prompt, "prefill", which yields the first
    new token), the new tokens per second after it (one forward pass each, "decode"), the seconds of each, the
    cache's bytes at the end and the generated ids ``(1, T + new_tokens)`` (an end-of-text token does not stop it).
    """
    from transformers import GenerationConfig
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self):
            self.times = []  # the prompt, then every new token

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    clock = Clock()
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0,
                              return_dict_in_generate=True)
    with torch.no_grad():
        output = model.generate(input_ids.to(model.device), generation_config=config, streamer=clock)
    prefill, decode = clock.times[1] - clock.times[0], clock.times[-1] - clock.times[1]
    return {"prompt_tokens": input_ids.shape[1], "new_tokens": new_tokens,
            "prefill_s": prefill, "prefill_tokens_per_s": input_ids.shape[1] / prefill,
            "decode_s": decode, "decode_tokens_per_s": (new_tokens - 1) / decode if new_tokens > 1 else float("nan"),
            "cache_bytes": cache_nbytes(_cache_of(output)), "ids": output.sequences.cpu()}


# ---------------------------------------------------------------- absmax, by PyTorch's quantizers

def _top_level(bits: int) -> int:
    """The largest level of symmetric signed absmax at ``bits`` bits: levels -top..top."""
    return {8: 127, 7: 63, 6: 31, 5: 15, 4: 7, 3: 3, 2: 1}[bits]


def absmax_scale(w: torch.Tensor, bits: int, block: int | None = None):
    """The absmax scale of ``w`` at ``bits`` bits as PyTorch's observer computes it: a float for the whole
    tensor (``block`` None), else a float32 tensor with one scale per ``block`` consecutive elements of the
    flattened ``w``. PyTorch raises an all-zero group's scale to float32's eps (its levels stay 0)."""
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    top = _top_level(bits)
    if block is None:
        observer = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-top, quant_max=top)
    else:  # each block a "channel": one row of the (blocks, block size) view
        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                            quant_min=-top, quant_max=top)
    observer(w.detach().float() if block is None else w.detach().float().view(-1, block))
    scale, _ = observer.calculate_qparams()  # symmetric: the zero points are 0
    return scale.item() if block is None else scale.float()


def absmax_round_trip(w: torch.Tensor, bits: int, block: int | None = None) -> torch.Tensor:
    """``w`` quantized with absmax at ``bits`` bits and read back, by PyTorch's fake quantizers: one scale for
    the tensor (``fake_quantize_per_tensor_affine``) or one per ``block`` consecutive elements of the flattened
    tensor (``fake_quantize_per_channel_affine`` on the ``(blocks, block)`` view). Same shape and dtype as ``w``."""
    top, x, scale = _top_level(bits), w.detach().float(), absmax_scale(w, bits, block)
    if block is None:
        return torch.fake_quantize_per_tensor_affine(x, scale, 0, -top, top).to(w.dtype)
    zero_points = torch.zeros_like(scale, dtype=torch.int32)
    out = torch.fake_quantize_per_channel_affine(x.view(-1, block), scale, zero_points, 0, -top, top)
    return out.view(w.shape).to(w.dtype)


# ---------------------------------------------------------------- the shipped GGUF file

Q4_1_BLOCK = 32  # weights per block
Q4_1_BLOCK_BYTES = 20  # fp16 scale d, fp16 minimum m, 16 bytes of 4-bit levels


def shipped_gguf_path() -> Path:
    """The GGUF file of the shipped SmolLM2 (fetched into the user cache on first use)."""
    from llmcourse.models import CAUSAL_LMS, DEFAULT_CAUSAL_LM

    shipped = CAUSAL_LMS[DEFAULT_CAUSAL_LM]
    return shipped.folder() / shipped.gguf_file


def gguf_tensor_types(path: Path | None = None) -> Counter:
    """How many tensors of the GGUF file are stored in each format (``Q4_1``, ``Q8_0``, ``F32``, ...)."""
    from gguf import GGUFReader

    return Counter(t.tensor_type.name for t in GGUFReader(path or shipped_gguf_path()).tensors)


def q4_1_blocks(tensor_name: str, path: Path | None = None) -> dict:
    """The raw Q4_1 blocks of one GGUF tensor, decoded: ``d`` and ``m`` ``(rows, blocks)`` float32 (stored as
    fp16) and the levels ``q`` ``(rows, blocks, 32)`` uint8 in 0..15; a weight is ``d * q + m``. Rows are the
    output features (``nn.Linear`` layout), each cut into blocks of 32 consecutive input features."""
    from gguf import GGUFReader

    (tensor,) = [t for t in GGUFReader(path or shipped_gguf_path()).tensors if t.name == tensor_name]
    if tensor.tensor_type.name != "Q4_1":
        raise ValueError(f"{tensor_name} is stored as {tensor.tensor_type.name}, not Q4_1")
    raw = np.asarray(tensor.data, dtype=np.uint8)
    blocks = raw.reshape(len(raw), -1, Q4_1_BLOCK_BYTES)  # (rows, blocks, 20): each row's bytes, block by block
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)  # (rows, blocks)
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    packed = blocks[..., 4:]  # (rows, blocks, 16): byte j holds level j (low nibble) and level j + 16 (high)
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=-1)  # (rows, blocks, 32)
    return {"d": torch.from_numpy(d), "m": torch.from_numpy(m), "q": torch.from_numpy(q.copy()),
            "type": tensor.tensor_type.name, "n_bytes": int(tensor.n_bytes)}


def gguf_dequantized(tensor_name: str, path: Path | None = None) -> torch.Tensor:
    """One tensor of the GGUF file as float32, read back by the ``gguf`` package's own ``dequantize`` (its
    shape as PyTorch lays it out: ``(out features, in features)`` for a weight)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize as gguf_dequantize

    (tensor,) = [t for t in GGUFReader(path or shipped_gguf_path()).tensors if t.name == tensor_name]
    return torch.from_numpy(np.ascontiguousarray(gguf_dequantize(tensor.data, tensor.tensor_type), dtype=np.float32))


# ---------------------------------------------------------------- parallel texts and tokenizers

# Written for this lesson: the same six sentences in six of BLOOM's languages (English, French, Spanish,
# Arabic, Hindi, Swahili), everyday content, one sentence per line.
PARALLEL_TEXTS = {
    "English": [
        "It is very hot today, so we will stay at home.",
        "My sister is a nurse at the hospital in town.",
        "The children read books in the library after school.",
        "Please drink clean water and wash your hands before you eat.",
        "The farmers sold their vegetables at the market on Saturday morning.",
        "Next year a new road will connect the village to the nearest town.",
    ],
    "French": [
        "Il fait très chaud aujourd'hui, alors nous resterons à la maison.",
        "Ma sœur est infirmière à l'hôpital de la ville.",
        "Les enfants lisent des livres à la bibliothèque après l'école.",
        "Buvez de l'eau propre et lavez-vous les mains avant de manger, s'il vous plaît.",
        "Les agriculteurs ont vendu leurs légumes au marché samedi matin.",
        "L'année prochaine, une nouvelle route reliera le village à la ville la plus proche.",
    ],
    "Spanish": [
        "Hoy hace mucho calor, así que nos quedaremos en casa.",
        "Mi hermana es enfermera en el hospital de la ciudad.",
        "Los niños leen libros en la biblioteca después de la escuela.",
        "Por favor, bebe agua limpia y lávate las manos antes de comer.",
        "Los agricultores vendieron sus verduras en el mercado el sábado por la mañana.",
        "El próximo año, una carretera nueva unirá el pueblo con la ciudad más cercana.",
    ],
    "Arabic": [
        "الجو حار جدا اليوم، لذلك سنبقى في البيت.",
        "أختي ممرضة في مستشفى المدينة.",
        "يقرأ الأطفال الكتب في المكتبة بعد المدرسة.",
        "من فضلك اشرب ماء نظيفا واغسل يديك قبل أن تأكل.",
        "باع المزارعون خضرواتهم في السوق صباح يوم السبت.",
        "في العام المقبل، سيربط طريق جديد القرية بأقرب مدينة.",
    ],
    "Hindi": [
        "आज बहुत गर्मी है, इसलिए हम घर पर रहेंगे।",
        "मेरी बहन शहर के अस्पताल में नर्स है।",
        "बच्चे स्कूल के बाद पुस्तकालय में किताबें पढ़ते हैं।",
        "कृपया साफ़ पानी पिएँ और खाने से पहले अपने हाथ धोएँ।",
        "किसानों ने शनिवार सुबह बाज़ार में अपनी सब्ज़ियाँ बेचीं।",
        "अगले साल एक नई सड़क गाँव को पास के शहर से जोड़ेगी।",
    ],
    "Swahili": [
        "Leo kuna joto sana, kwa hiyo tutakaa nyumbani.",
        "Dada yangu ni muuguzi katika hospitali ya mjini.",
        "Watoto husoma vitabu maktabani baada ya shule.",
        "Tafadhali kunywa maji safi na unawe mikono kabla ya kula.",
        "Wakulima waliuza mboga zao sokoni Jumamosi asubuhi.",
        "Mwaka ujao, barabara mpya itaunganisha kijiji na mji wa karibu.",
    ],
}


@dataclass(frozen=True)
class CourseTokenizer:
    """A tokenizer seen as ``tokenize(text) -> list of tokens``, and its unknown token (None when it has none)."""

    name: str
    tokenize: object
    unk_token: str | None
    about: str


def course_tokenizers() -> dict[str, CourseTokenizer]:
    """The three tokenizers of the fertility comparison, loaded offline: MiniLM's WordPiece, SmolLM2's and
    GPT-2's byte-level BPEs (byte-level: any text is some bytes, so they have no unknown token)."""
    from transformers import AutoTokenizer

    from llmcourse.data import gpt2_tokenizer
    from llmcourse.models import CAUSAL_LMS, DEFAULT_CAUSAL_LM, DEFAULT_ENCODER, ENCODERS, resolve

    minilm = AutoTokenizer.from_pretrained(resolve(None, ENCODERS, DEFAULT_ENCODER))
    smollm2 = AutoTokenizer.from_pretrained(resolve(None, CAUSAL_LMS, DEFAULT_CAUSAL_LM))
    gpt2 = gpt2_tokenizer()
    return {
        "MiniLM WordPiece": CourseTokenizer("MiniLM WordPiece", minilm.tokenize, minilm.unk_token,
                                            f"uncased WordPiece, {minilm.vocab_size:,} pieces"),
        "SmolLM2 BPE": CourseTokenizer("SmolLM2 BPE", smollm2.tokenize, None,
                                       f"byte-level BPE, {len(smollm2):,} tokens"),
        "GPT-2 BPE": CourseTokenizer("GPT-2 BPE", gpt2.encode, None, f"byte-level BPE, {gpt2.n_vocab:,} tokens"),
    }
