"""Scores of the shipped model on the BIG-bench tasks of lesson 09, with the cost of each run.

    python benchmarks/bigbench.py [--quick] [--cached] [--model NAME] [--tasks emoji_movie kannada ...]

Prints one table: for every task and setting (zero-, one- and three-shot in BIG-bench's format, the
"no_choices" and "chat" formats zero-shot), the number of examples scored (sampled with a fixed seed),
the multiple_choice_grade with its 95 % Wilson interval, the random baseline and the range a random
guesser falls in, the verdict, and the seconds per example; then two-digit addition with and without a
chain of thought (exact match); then the total time and the peak memory. Every run is computed afresh,
unless ``--cached`` reuses the lesson's cached scoring runs (their seconds are those of the run that
computed them). The tasks ship with the package (llmcourse/course_data).
"""

import argparse
import re
import resource
import sys
import time

import numpy as np

from llmcourse import evaluation as harness
from llmcourse.models import load_causal_lm

FULL = {"emoji_movie": 60, "kannada": 25, "checkmate_in_one": 20, "date_understanding": 50}  # the lesson's sizes
QUICK = {"emoji_movie": 5, "kannada": 1, "checkmate_in_one": 1, "date_understanding": 5}
SHOTS = (0, 1, 3)
FORMAT_TASKS = ("emoji_movie", "date_understanding")
ARITHMETIC = {"full": 24, "quick": 4}


def peak_memory_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is in kB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1e6 if sys.platform == "darwin" else 1e3)


def multiple_choice_rows(model, tokenizer, sizes: dict, cached: bool = False) -> list:
    evaluate = harness.cached_multiple_choice if cached else harness.evaluate_multiple_choice
    rows = []
    for name, n in sizes.items():
        task = harness.load_task(name, n)
        settings = [(k, "bigbench") for k in SHOTS] + [(0, f) for f in harness.FORMATS[1:] if name in FORMAT_TASKS]
        for shots, fmt in settings:
            run = evaluate(model, tokenizer, task, shots=shots, fmt=fmt, progress=False)
            s = harness.summarise(run["earned"], run["target_scores"])
            rows.append((name, f"{shots}-shot {fmt}", s, run["seconds"] / s["n"], np.mean(run["prompt_tokens"])))
            print(f"  done: {name} {shots}-shot {fmt} ({run['seconds']:.0f} s)", file=sys.stderr, flush=True)
    return rows


def arithmetic_rows(model, tokenizer, n: int) -> list:
    task = harness.load_task("arithmetic/2_digit_addition", n)
    exemplars = harness.arithmetic_exemplars(task)
    shots = {"direct": [f"Q: {q}\nA: The answer is {a}." for q, _, a in exemplars],
             "chain of thought": [f"Q: {q}\nA: {r} The answer is {a}." for q, r, a in exemplars]}
    rows = []
    for kind, blocks in shots.items():
        prompts = ["\n\n".join(blocks + [f"Q: {item.input}\nA:"]) for item in task.items]
        start = time.perf_counter()
        texts = harness.generate(model, tokenizer, prompts, 48 if kind == "chain of thought" else 12, progress=False)
        seconds = time.perf_counter() - start
        answers = [(re.findall(r"[Tt]he answer is (-?\d+)", t) or [""])[-1] for t in texts]
        right = [a == item.targets[0] for a, item in zip(answers, task.items)]
        low, high = harness.wilson_interval(sum(right), len(right))
        rows.append((kind, len(right), float(np.mean(right)), low, high, seconds / len(right)))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the lesson's quick-mode sizes")
    parser.add_argument("--cached", action="store_true", help="reuse the lesson's cached scoring runs")
    parser.add_argument("--model", default=None, help="a model name for load_causal_lm (default: SmolLM2-135M)")
    parser.add_argument("--tasks", nargs="*", default=None, help="a subset of " + ", ".join(FULL))
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.tasks:
        sizes = {t: sizes[t] for t in args.tasks}
    start = time.perf_counter()
    tokenizer, model = load_causal_lm(args.model)
    load_seconds = time.perf_counter() - start

    rows = multiple_choice_rows(model, tokenizer, sizes, args.cached)
    print(f"\nmodel: {args.model or 'SmolLM2-135M-Instruct (dequantized from 4-bit GGUF)'}, "
          f"{'quick' if args.quick else 'full'} sizes, seed {harness.SEED}, scored by choice log-likelihood\n")
    head = (f"{'task':20s} {'setting':22s} {'n':>4s} {'score':>6s} {'95% interval':>13s} {'random':>7s} "
            f"{'guesser 95%':>12s} {'p':>6s}  {'verdict':13s} {'s/example':>9s} {'tokens':>7s}")
    print(head)
    print("-" * len(head))
    for name, setting, s, per_example, tokens in rows:
        print(f"{name:20s} {setting:22s} {s['n']:4d} {s['score']:6.3f} {s['low']:6.2f}-{s['high']:<6.2f} "
              f"{s['chance']:7.3f} {s['chance_low']:5.2f}-{s['chance_high']:<6.2f} {s['p_value']:6.3f}  "
              f"{s['verdict']:13s} {per_example:9.2f} {tokens:7.0f}")

    print(f"\n{'arithmetic/2_digit_addition':28s} {'n':>4s} {'exact match':>11s} {'95% interval':>13s} "
          f"{'s/example':>9s}")
    for kind, n, score, low, high, per_example in arithmetic_rows(model, tokenizer,
                                                                   ARITHMETIC["quick" if args.quick else "full"]):
        print(f"{kind:28s} {n:4d} {score:11.3f} {low:6.2f}-{high:<6.2f} {per_example:9.2f}")
    total = time.perf_counter() - start
    print(f"\nmodel load {load_seconds:.1f} s; total {total:.0f} s; peak memory {peak_memory_mb():,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
