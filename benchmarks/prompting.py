"""Few-shot sentiment accuracy of the shipped model, by generation and by likelihood, and greedy decoding
speed with and without the key/value cache (lesson 05 on a larger sample).

    python benchmarks/prompting.py [--n-test 200] [--shots 0 1 2 4 8] [--draws 1] [--format review|io]

For every number of shots (and every draw of the shots), the same test sentences are classified twice:
- by generation: ``llmcourse.prompting.classify_by_generation`` (the lesson's method: greedy-generate three
  tokens after the prompt, read the first word; an unreadable answer counts as wrong);
- by likelihood: the exercise's ``classify_by_likelihood`` definition (the label whose tokens, " " + label,
  have the highest total log-probability after the prompt), computed with the shots' key/value cache
  reused; it is checked against the reference solution's own function on a few sentences first.

Then greedy generation of ``--kv-tokens`` tokens is timed with ``use_cache=True`` and ``False``. Prints
tables; times depend on the machine (and on whatever else runs on it).
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmcourse.data import sentiment  # noqa: E402
from llmcourse.models import load_causal_lm  # noqa: E402
from llmcourse.prompting import (SENTIMENT_LABELS, PromptFormat, classify_by_generation, draw_shots,  # noqa: E402
                                 encode, prefix_cache, time_generation)

FORMATS = {"review": PromptFormat("Review/Sentiment"),
           "io": PromptFormat("Input/Output", input_prefix="Input: ", output_prefix="Output:")}
KV_PROMPT = "The history of the printing press"


@torch.no_grad()
def likelihood_predictions(model, tokenizer, fmt: PromptFormat, shots: list, texts: list) -> list:
    """The class whose label (" " + label, tokenized on its own) is likeliest after each prompt; the prompt is
    the prefix (instruction and shots, cached once) followed by the query's block."""
    prefix = fmt.prefix(shots)
    prefix_ids, cache = prefix_cache(model, tokenizer, prefix)
    label_ids = [encode(tokenizer, " " + label) for label in fmt.labels]  # each (1, n_label)
    predictions = []
    for text in texts:
        query_ids = encode(tokenizer, (fmt.separator if prefix else "") + fmt.query(text))
        out = model(query_ids, cache=copy.deepcopy(cache) if cache is not None else None, use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].double(), dim=-1)  # (V,): the first label token
        scores = []
        for ids in label_ids:
            score = first[ids[0, 0]].item()
            if ids.shape[1] > 1:  # the rest of a longer label, given the query's cache
                rest = model(ids[:, :-1], cache=copy.deepcopy(out.cache), use_cache=True).logits[0].double()
                score += torch.log_softmax(rest, dim=-1).gather(1, ids[0, 1:, None]).sum().item()
            scores.append(score)
        predictions.append(int(np.argmax(scores)))
    return predictions


def verify_against_reference(model, tokenizer, fmt: PromptFormat, shots: list, texts: list) -> int:
    """Our cached likelihood classifier gives the reference solution's answers (the full prompt, no cache)."""
    from grader.notebook import load_definitions

    solution = ROOT / "solutions" / "05-gpt-and-prompting" / "05-gpt-and-prompting.ipynb"
    classify = load_definitions(solution).function("classify_by_likelihood")
    ours = likelihood_predictions(model, tokenizer, fmt, shots, texts)
    labels = list(fmt.labels)
    with torch.no_grad():
        theirs = [labels.index(classify(model, tokenizer, fmt.render(shots, text), labels)) for text in texts]
    if ours != theirs:
        raise AssertionError(f"the cached likelihood classifier disagrees with the reference: {ours} vs {theirs}")
    return len(texts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=200, help="test sentences (default 200)")
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    parser.add_argument("--draws", type=int, default=1, help="draws of the shots per number of shots")
    parser.add_argument("--format", choices=sorted(FORMATS), default="review")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kv-tokens", type=int, default=50, help="new tokens in the cache timing")
    args = parser.parse_args(argv)

    tokenizer, model = load_causal_lm()
    fmt = FORMATS[args.format]
    data = sentiment()
    test = data["test"].shuffle(seed=args.seed).select(range(args.n_test))
    texts, gold = list(test["text"]), np.array(test["label"])
    print(f"SmolLM2-135M-Instruct (dequantized from Q4_1 GGUF), {args.n_test} test sentences, format "
          f"{fmt.name!r}, labels {SENTIMENT_LABELS}, torch threads {torch.get_num_threads()}", flush=True)
    n_checked = verify_against_reference(model, tokenizer, fmt, draw_shots(data["train"], 2, args.seed + 7), texts[:4])
    print(f"likelihood classifier verified against the reference solution on {n_checked} sentences", flush=True)

    rows = []
    for k in args.shots:
        for draw in range(1 if k == 0 else args.draws):
            seed = args.seed + 1000 * k + draw
            shots = draw_shots(data["train"], k, seed)
            generated = classify_by_generation(model, tokenizer, fmt, shots, texts, list(gold))
            start = time.perf_counter()
            likely = likelihood_predictions(model, tokenizer, fmt, shots, texts)
            lik_seconds = (time.perf_counter() - start) / len(texts)
            agree = float(np.mean([g == lk for g, lk in zip(generated.predictions, likely)]))
            rows.append((k, draw, generated.share_right, generated.unreadable, generated.seconds_per_example,
                         float(np.mean(np.array(likely) == gold)), lik_seconds,
                         float(np.mean(generated.prompt_tokens)), agree))
            print(f"  {k} shots, draw {draw}: generation {generated.share_right:.1%} "
                  f"({generated.unreadable} unreadable), likelihood {rows[-1][5]:.1%}", flush=True)

    print(f"\nFew-shot sentiment accuracy ({args.n_test} test sentences; random guess 50%, majority label "
          f"{max(gold.mean(), 1 - gold.mean()):.1%})")
    print(f"{'shots':>5} {'draw':>4} {'prompt tokens':>13} | {'generation':>10} {'unreadable':>10} {'s/example':>9} | "
          f"{'likelihood':>10} {'s/example':>9} | {'same answer':>11}")
    for k, draw, g_acc, unread, g_s, l_acc, l_s, n_tok, agree in rows:
        print(f"{k:5d} {draw:4d} {n_tok:13.0f} | {g_acc:10.1%} {unread:10d} {g_s:9.3f} | {l_acc:10.1%} {l_s:9.3f} | "
              f"{agree:11.1%}")
    for k in args.shots:  # mean and spread over the draws
        accs = np.array([(r[2], r[5]) for r in rows if r[0] == k])
        if len(accs) > 1:
            print(f"{k} shots over {len(accs)} draws: generation {accs[:, 0].mean():.1%} +- {accs[:, 0].std():.1%}, "
                  f"likelihood {accs[:, 1].mean():.1%} +- {accs[:, 1].std():.1%}")

    print(f"\nGreedy decoding of {args.kv_tokens} new tokens after {KV_PROMPT!r}")
    ids = encode(tokenizer, KV_PROMPT)
    timings = {}
    for use_cache in (True, False):
        timings[use_cache] = time_generation(model, ids, args.kv_tokens, use_cache, tokenizer.eos_token_id)
        print(f"  use_cache={use_cache!s:5}: {timings[use_cache]['seconds']:7.2f} s, "
              f"{timings[use_cache]['tokens_per_second']:6.2f} tokens/s", flush=True)
    same = torch.equal(timings[True]["tokens"], timings[False]["tokens"])
    print(f"  speed-up {timings[True]['tokens_per_second'] / timings[False]['tokens_per_second']:.1f}x, "
          f"same tokens: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
